"""A throwaway TimescaleDB 2.19, Prometheus and Mosquitto on 127.0.0.1, for the tests and the
native demo.

    python3 -m wattwatch.stack ACTION (in a checkout also python3 scripts/stack.py ACTION)

    stack.py install            packages and (on Debian 12) the cached trixie root; needs root
    stack.py up --state DIR     start all three on free ports; prints the stack as JSON
    stack.py down --state DIR   stop them and delete their data
    stack.py restart --state DIR [--mode fast|immediate]
                                restart the stack's PostgreSQL (every connection to it is cut;
                                immediate: a crash, with recovery at start), same port and data
    stack.py restart --state DIR --service mosquitto
                                restart the broker (it saves its sessions and queued messages
                                on the way down), same port, password file and data

TimescaleDB comes from Debian 13's postgresql-17-timescaledb: installed directly on Debian 13,
and on Debian 12 inside a trixie root built once by mmdebstrap and kept in ~/.cache/wattwatch,
started through chroot. When WATTWATCH_TEST_DATABASE_URL is set, that server is used instead
and no cluster is started. Prometheus and Mosquitto are Debian packages (installed on the host in
both cases), run with the project's own config (the checkout's prometheus/, or
share/wattwatch/prometheus where the package is installed); the broker refuses anonymous
clients and knows one user, whose password is in the stack's JSON. It also listens with TLS on a
second port (mqtts_url), with a throwaway CA and server certificate made at start by the openssl
CLI; the CA file's path is in the JSON (mqtt_ca_file).
Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

CACHE = Path(os.environ.get("WATTWATCH_CACHE_DIR", Path.home() / ".cache" / "wattwatch"))
TRIXIE_ROOT = CACHE / "trixie-root"
PG_PACKAGES = ["postgresql-17", "postgresql-17-timescaledb"]
PG_BIN = "/usr/lib/postgresql/17/bin"
# Inside the chroot (Debian 12) or on the host (Debian 13): where throwaway clusters live.
CLUSTERS = "/var/tmp/wattwatch-clusters"


def shipped(name: str) -> Path:
    """A directory the project ships beside its packages (prometheus, grafana): the checkout's
    own, else share/wattwatch/NAME under the prefix the package was installed into."""
    checkout = Path(__file__).resolve().parent.parent
    candidates = [checkout] if (checkout / "pyproject.toml").exists() else []
    candidates += [Path(prefix) / "share" / "wattwatch"
                   for prefix in (sysconfig.get_path("data"), site.getuserbase())]
    for root in candidates:
        if (root / name).is_dir():
            return root / name
    sys.exit(f"stack: {name}/ not found in a source checkout nor under share/wattwatch: "
             "reinstall the wattwatch package")


def log(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def debian_release() -> str:
    fields = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    return fields.get("VERSION_CODENAME", "").strip('"')


def native() -> bool:
    """True where Debian 13 packages install directly; False means the trixie chroot."""
    return debian_release() == "trixie"


def missing_packages(names: list[str]) -> list[str]:
    missing = []
    for name in names:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True
        )
        if "install ok installed" not in probe.stdout:
            missing.append(name)
    return missing


def apt_install(missing: list[str]) -> None:
    if not missing:
        return
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
        stdout=subprocess.DEVNULL)


def external_database() -> bool:
    return bool(os.environ.get("WATTWATCH_TEST_DATABASE_URL"))


def needed_packages() -> list[str]:
    """Debian packages this machine still lacks for the stack."""
    wanted = ["prometheus", "mosquitto", "openssl"]
    if not external_database():
        wanted += PG_PACKAGES if native() else ["mmdebstrap"]
    return missing_packages(wanted)


def install() -> None:
    """Everything the stack needs, idempotently; a second run does nothing and needs no root."""
    packages = needed_packages()
    build_root = not (native() or external_database()
                      or (TRIXIE_ROOT / PG_BIN.lstrip("/") / "postgres").exists())
    if not packages and not build_root:
        return
    if os.geteuid() != 0:
        sys.exit("stack: installing TimescaleDB, Prometheus and Mosquitto needs root (apt-get, mmdebstrap); "
                 "or set WATTWATCH_TEST_DATABASE_URL to a TimescaleDB server")
    apt_install(packages)
    if build_root:
        building = TRIXIE_ROOT.with_name("trixie-root.building")
        shutil.rmtree(building, ignore_errors=True)
        building.parent.mkdir(parents=True, exist_ok=True)
        log(f"building a Debian 13 root with TimescaleDB in {TRIXIE_ROOT} (about 30 s, once)")
        run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(PG_PACKAGES), "trixie",
             str(building)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        building.rename(TRIXIE_ROOT)  # only a complete root ever has the final name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program as the postgres user, in the trixie root where there is one."""
    if native():
        return run(["runuser", "-u", "postgres", "--", *args], **kwargs)
    return run(["chroot", "--userspec=postgres:postgres", str(TRIXIE_ROOT), *args], **kwargs)


def as_root(args: list[str]) -> None:
    run(args if native() else ["chroot", str(TRIXIE_ROOT), *args])


def host_path(path: str) -> Path:
    return Path(path) if native() else TRIXIE_ROOT / path.lstrip("/")


def mount_chroot() -> None:
    if native():
        return
    for target, how in (("dev", ["--bind", "/dev"]), ("proc", ["-t", "proc", "proc"])):
        point = TRIXIE_ROOT / target
        if not os.path.ismount(point):
            run(["mount", *how, str(point)])


def unmount_chroot_if_idle() -> None:
    """Unmount /dev and /proc from the root once no cluster runs there (rm -rf stays safe)."""
    if native():
        return
    clusters = host_path(CLUSTERS)
    if clusters.exists() and any(clusters.glob("*/postmaster.pid")):
        return
    for target in ("proc", "dev"):
        point = TRIXIE_ROOT / target
        if os.path.ismount(point):
            subprocess.run(["umount", "--lazy", str(point)], check=False)


def cluster_pid(data: Path) -> int | None:
    """The pid of the live postmaster of the cluster in `data`, if one runs."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def start_postgres(state: Path) -> dict:
    if not (host_path(PG_BIN) / "postgres").exists():
        sys.exit("stack: TimescaleDB is not installed: install it first as root "
                 "(scripts/stack.py install, or wattwatch demo)")
    mount_chroot()
    name = state.name
    data = f"{CLUSTERS}/{name}"
    running = cluster_pid(host_path(data))
    if running:
        # Clusters are named after the state directory: another stack of the same name may run.
        sys.exit(f"stack: a PostgreSQL (pid {running}) already runs in {data}; "
                 "give this stack a state directory of another name")
    shutil.rmtree(host_path(data), ignore_errors=True)
    as_root(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "700", data])
    password = secrets.token_hex(16)
    pwfile = f"{CLUSTERS}/{name}.pw"
    host_path(pwfile).write_text(password + "\n")
    as_root(["chown", "postgres:postgres", pwfile])
    as_postgres([f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--locale=C.UTF-8"], stdout=subprocess.DEVNULL)
    host_path(pwfile).unlink()
    port = free_port()
    # Throwaway data: durability settings off for speed; TimescaleDB preloaded.
    options = " ".join([
        "-c listen_addresses=127.0.0.1", f"-p {port}", f"-c unix_socket_directories={data}",
        "-c shared_preload_libraries=timescaledb", "-c timescaledb.telemetry_level=off",
        "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
        "-c max_connections=200", "-c shared_buffers=512MB",
    ])
    as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-o", options, "-l", f"{data}/postgres.log",
                 "-w", "-t", "60", "start"], stdout=subprocess.DEVNULL)
    return {
        "database_url": f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres",
        "postgres_data": data,
        "postgres_log": str(host_path(data) / "postgres.log"),
    }


def stop_postgres(info: dict) -> None:
    data = info.get("postgres_data")
    if not data or not host_path(data).exists():
        return
    if (host_path(data) / "postmaster.pid").exists():
        subprocess.run(
            (["runuser", "-u", "postgres", "--"] if native()
             else ["chroot", "--userspec=postgres:postgres", str(TRIXIE_ROOT)])
            + [f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL,
        )
    shutil.rmtree(host_path(data), ignore_errors=True)


def restart_postgres(state: Path, mode: str) -> None:
    """Restart the stack's PostgreSQL in place (same options, port and data), waiting until it
    accepts connections again: how the tests cut every connection, as a server restart does."""
    file = state / "stack.json"
    info = json.loads(file.read_text()) if file.exists() else {}
    data = info.get("postgres_data")
    if not data:
        sys.exit(f"stack: no PostgreSQL of this stack to restart in {state} "
                 "(not started, or an external WATTWATCH_TEST_DATABASE_URL)")
    mount_chroot()
    # pg_ctl restart starts it with the options of the last start (postmaster.opts)
    as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-m", mode, "-l", f"{data}/postgres.log",
                 "-w", "-t", "60", "restart"], stdout=subprocess.DEVNULL)


def start_prometheus(state: Path) -> dict:
    if shutil.which("prometheus") is None:
        sys.exit("stack: prometheus is not installed: install it first as root "
                 "(scripts/stack.py install, or wattwatch demo)")
    port = free_port()
    (state / "targets").mkdir(parents=True, exist_ok=True)
    config = shipped("prometheus")
    shutil.copy(config / "prometheus.yml", state / "prometheus.yml")
    # The project's config reads its targets from targets/*.json (file_sd); natively they are
    # loopback ports, written here for Prometheus itself and by the tests for each service.
    for job_file in (config / "targets").glob("*.json"):
        (state / "targets" / job_file.name).write_text("[]\n")
    (state / "targets" / "prometheus.json").write_text(
        json.dumps([{"targets": [f"127.0.0.1:{port}"]}]) + "\n"
    )
    with open(state / "prometheus.log", "ab") as out:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={state / 'prometheus.yml'}",
             f"--storage.tsdb.path={state / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdout=out, stderr=out, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"stack: prometheus exited with {process.returncode}; see {state / 'prometheus.log'}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        sys.exit(f"stack: prometheus not ready after 60 s; see {state / 'prometheus.log'}")
    return {"prometheus_url": url, "prometheus_pid": process.pid,
            "prometheus_targets": str(state / "targets")}


MQTT_USER = "wattwatch"
# The throwaway CA and server certificate of the broker's TLS listener: valid long enough for any
# test session, never reused by another stack.
CERT_DAYS = 7
# Messages in flight to one client: well below the 65,535 packet ids, and enough to keep the
# ingest's batches full while it commits the previous one.
MQTT_INFLIGHT = 20_000


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA (NAME.crt, NAME.key) made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(CERT_DAYS),
         "-subj", f"/CN=wattwatch throwaway {name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], capture_output=True)
    return cert, key


def make_server_certificate(directory: Path) -> dict[str, Path]:
    """A CA and a certificate it signed for 127.0.0.1 and localhost, with their keys, in
    `directory`: what the broker's TLS listener presents and what its clients trust."""
    ca, ca_key = make_ca(directory)
    cert, key, request = (directory / "server.crt", directory / "server.key",
                          directory / "server.csr")
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(request), "-subj", "/CN=127.0.0.1"], capture_output=True)
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "basicConstraints=CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\n"
                          "extendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", str(CERT_DAYS),
         "-extfile", str(extensions)], capture_output=True)
    ca_key.unlink()  # nothing is ever signed with it again
    return {"ca": ca, "cert": cert, "key": key}


def mosquitto_config(state: Path, port: int, tls_port: int) -> str:
    """The broker's config: loopback only, a password file, no anonymous clients; sessions and
    queued QoS 1 messages are kept on disk across a restart, and the messages queued for a client
    are not capped, so a slow or absent subscriber loses nothing. Those in flight to a client
    are: packet ids run from 1 to 65535, and an MQTT 3.1.1 client (which sends no receive
    maximum) with an uncapped backlog in flight would be sent two messages under one id.
    A second listener on `tls_port` speaks TLS with the certificate in tls/ (the same users)."""
    import pwd

    tls = state / "tls"
    return "\n".join([
        f"listener {port} 127.0.0.1",
        f"listener {tls_port} 127.0.0.1",
        f"cafile {tls / 'ca.crt'}",
        f"certfile {tls / 'server.crt'}",
        f"keyfile {tls / 'server.key'}",
        "allow_anonymous false",
        f"password_file {state / 'mosquitto.passwd'}",
        "persistence true",
        f"persistence_location {state / 'mosquitto-data'}/",
        f"max_inflight_messages {MQTT_INFLIGHT}",
        "max_queued_messages 0",
        f"log_dest file {state / 'mosquitto.log'}",
        "log_type error", "log_type warning", "log_type notice",
        # Run as whoever started the stack: the state directory is theirs.
        f"user {pwd.getpwuid(os.geteuid()).pw_name}",
    ]) + "\n"


def start_mosquitto(state: Path, port: int | None = None, password: str | None = None,
                    tls_port: int | None = None) -> dict:
    """Mosquitto on free loopback ports (or `port` and `tls_port`, on a restart) with a fresh
    password file; a CA and server certificate made at the first start, kept for restarts."""
    # Debian installs the broker in /usr/sbin, which a non-root PATH often lacks.
    mosquitto = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if mosquitto is None:
        sys.exit("stack: mosquitto is not installed: install it first as root "
                 "(scripts/stack.py install, or wattwatch demo)")
    port = port or free_port()
    tls_port = tls_port or free_port()
    password = password or secrets.token_hex(16)
    if not (state / "tls" / "server.crt").exists():
        make_server_certificate(state / "tls")
    (state / "mosquitto-data").mkdir(parents=True, exist_ok=True)
    passwd = state / "mosquitto.passwd"
    passwd.write_text("")
    passwd.chmod(0o600)
    run(["mosquitto_passwd", "-b", str(passwd), MQTT_USER, password])
    (state / "mosquitto.conf").write_text(mosquitto_config(state, port, tls_port))
    with open(state / "mosquitto.log", "ab") as out:
        process = subprocess.Popen(
            [mosquitto, "-c", str(state / "mosquitto.conf")],
            stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            sys.exit(f"stack: mosquitto exited with {process.returncode}; see {state / 'mosquitto.log'}")
        try:
            for listening in (port, tls_port):
                socket.create_connection(("127.0.0.1", listening), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"stack: mosquitto not listening after 30 s; see {state / 'mosquitto.log'}")
            time.sleep(0.1)
    return {"mqtt_url": f"mqtt://127.0.0.1:{port}", "mqtt_username": MQTT_USER,
            "mqtt_password": password, "mosquitto_pid": process.pid,
            "mqtts_url": f"mqtts://127.0.0.1:{tls_port}",
            "mqtt_ca_file": str(state / "tls" / "ca.crt")}


def stop_process(pid: int | None) -> None:
    """SIGTERM, then SIGKILL after 10 s; returns once the process is gone."""
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def restart_mosquitto(state: Path) -> None:
    """Stop the broker (it writes its sessions and messages to disk) and start it again on the
    same port with the same password and data."""
    file = state / "stack.json"
    info = json.loads(file.read_text())
    stop_process(info["mosquitto_pid"])
    info.update(start_mosquitto(state, int(info["mqtt_url"].rsplit(":", 1)[1]),
                                info["mqtt_password"], int(info["mqtts_url"].rsplit(":", 1)[1])))
    file.write_text(json.dumps(info, indent=2) + "\n")


def up(state: Path) -> dict:
    if (state / "stack.json").exists():
        down(state)
    state.mkdir(parents=True, exist_ok=True)
    info: dict = {"state": str(state)}
    try:
        if external_database():
            info["database_url"] = os.environ["WATTWATCH_TEST_DATABASE_URL"]
        else:
            info.update(start_postgres(state))
        info.update(start_prometheus(state))
        info.update(start_mosquitto(state))
    except BaseException:
        down_info(info)
        raise
    (state / "stack.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def down_info(info: dict) -> None:
    stop_process(info.get("prometheus_pid"))
    stop_process(info.get("mosquitto_pid"))
    stop_postgres(info)
    unmount_chroot_if_idle()


def down(state: Path) -> None:
    file = state / "stack.json"
    if file.exists():
        down_info(json.loads(file.read_text()))
    shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "up", "down", "restart"])
    parser.add_argument("--state", type=Path, default=CACHE / "stacks" / "default",
                        help="directory for this stack's state, logs and Prometheus data")
    parser.add_argument("--mode", choices=["fast", "immediate"], default="fast",
                        help="restart: pg_ctl's shutdown mode (default fast)")
    parser.add_argument("--service", choices=["postgres", "mosquitto"], default="postgres",
                        help="restart: which server (default postgres)")
    args = parser.parse_args()
    if args.action == "install":
        install()
    elif args.action == "up":
        print(json.dumps(up(args.state.resolve()), indent=2))
    elif args.action == "restart" and args.service == "mosquitto":
        restart_mosquitto(args.state.resolve())
    elif args.action == "restart":
        restart_postgres(args.state.resolve(), args.mode)
    else:
        down(args.state.resolve())


if __name__ == "__main__":
    main()
