"""The database layer: connections, numbered migrations, license detection and maintenance."""
