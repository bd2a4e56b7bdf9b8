"""What Grafana 11.5 (compose.yaml pins grafana/grafana:11.5.2) knows, for the static checks of
the dashboards: its built-in panel plugin ids and its unit ids. A panel type it does not know
shows "Panel plugin not found"; a unit id it does not know is printed as text after the number.

PANEL_TYPES: the panels of public/app/features/plugins/built_in_plugins.ts in grafana/grafana's
11.x line (`core:plugin/<id>`, the `id` of public/app/plugins/panel/<id>/plugin.json), less
`graph` and `table-old`: Angular panels, which Grafana 11 turns off by default.

UNITS: every `id` of packages/grafana-data/src/valueFormats/categories.ts at 11.5.2, read from
that file as built into the @grafana/data 11.5.2 package (dist/esm/valueFormats/categories.js),
under its category names. Grafana also reads custom units (`prefix:`, `suffix:`, `si:`,
`count:`, `currency:`, `time:`, `bool:`; valueFormats.ts getValueFormat); the dashboards use
none, and the check rejects them so that adding one is a deliberate change.
"""

PANEL_TYPES = frozenset({
    "alertlist", "annolist", "barchart", "bargauge", "candlestick", "canvas", "dashlist", "datagrid",
    "debug", "flamegraph", "gauge", "geomap", "gettingstarted", "heatmap", "histogram", "live", "logs",
    "news", "nodeGraph", "piechart", "stat", "state-timeline", "status-history", "table", "text",
    "timeseries", "traces", "trend", "welcome", "xychart",
})

UNITS = frozenset({
    # Misc
    "none", "string", "short", "sishort", "percent", "percentunit", "humidity", "dB", "candela",
    "hex0x", "hex", "sci", "locale", "pixel",
    # Acceleration
    "accMS2", "accFS2", "accG",
    # Angle
    "degree", "radian", "grad", "arcmin", "arcsec",
    # Area
    "areaM2", "areaF2", "areaMI2", "acres", "hectares",
    # Computation
    "flops", "mflops", "gflops", "tflops", "pflops", "eflops", "zflops", "yflops",
    # Concentration
    "ppm", "conppb", "conngm3", "conngNm3", "con\u03bcgm3", "con\u03bcgNm3", "conmgm3",
    "conmgNm3", "congm3", "congNm3", "conmgdL", "conmmolL",
    # Currency
    "currencyUSD", "currencyGBP", "currencyEUR", "currencyJPY", "currencyRUB", "currencyUAH",
    "currencyBRL", "currencyDKK", "currencyISK", "currencyNOK", "currencySEK", "currencyCZK",
    "currencyCHF", "currencyPLN", "currencyBTC", "currencymBTC", "currency\u03bcBTC",
    "currencyZAR", "currencyINR", "currencyKRW", "currencyIDR", "currencyPHP", "currencyVND",
    "currencyTRY", "currencyMYR", "currencyXPF", "currencyBGN", "currencyPYG", "currencyUYU",
    "currencyILS",
    # Data
    "bytes", "decbytes", "bits", "decbits", "kbytes", "deckbytes", "mbytes", "decmbytes",
    "gbytes", "decgbytes", "tbytes", "dectbytes", "pbytes", "decpbytes",
    # Data rate
    "pps", "binBps", "Bps", "binbps", "bps", "KiBs", "Kibits", "KBs", "Kbits", "MiBs", "Mibits",
    "MBs", "Mbits", "GiBs", "Gibits", "GBs", "Gbits", "TiBs", "Tibits", "TBs", "Tbits", "PiBs",
    "Pibits", "PBs", "Pbits",
    # Date & time
    "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsUSNoDateIfToday",
    "dateTimeAsLocal", "dateTimeAsLocalNoDateIfToday", "dateTimeAsSystem", "dateTimeFromNow",
    # Energy
    "watt", "kwatt", "megwatt", "gwatt", "mwatt", "Wm2", "voltamp", "kvoltamp", "voltampreact",
    "kvoltampreact", "watth", "watthperkg", "kwatth", "kwattm", "mwatth", "amph", "kamph",
    "mamph", "joule", "ev", "amp", "kamp", "mamp", "volt", "kvolt", "mvolt", "dBm", "mohm",
    "ohm", "kohm", "Mohm", "farad", "\xb5farad", "nfarad", "pfarad", "ffarad", "henry",
    "mhenry", "\xb5henry", "lumens",
    # Flow
    "flowgpm", "flowcms", "flowcfs", "flowcfm", "litreh", "flowlpm", "flowmlpm", "lux",
    # Force
    "forceNm", "forcekNm", "forceN", "forcekN",
    # Hash rate
    "Hs", "KHs", "MHs", "GHs", "THs", "PHs", "EHs",
    # Mass
    "massmg", "massg", "masslb", "masskg", "masst",
    # Length
    "lengthmm", "lengthin", "lengthft", "lengthm", "lengthkm", "lengthmi",
    # Pressure
    "pressurembar", "pressurebar", "pressurekbar", "pressurepa", "pressurehpa", "pressurekpa",
    "pressurehg", "pressurepsi",
    # Radiation
    "radbq", "radci", "radgy", "radrad", "radsv", "radmsv", "radusv", "radrem", "radexpckg",
    "radr", "radsvh", "radmsvh", "radusvh",
    # Rotational Speed
    "rotrpm", "rothz", "rotkhz", "rotmhz", "rotghz", "rotrads", "rotdegs",
    # Temperature
    "celsius", "fahrenheit", "kelvin",
    # Time
    "hertz", "ns", "\xb5s", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms",
    "dtdhms", "timeticks", "clockms", "clocks",
    # Throughput
    "cps", "ops", "reqps", "rps", "wps", "iops", "eps", "mps", "recps", "rowsps", "cpm", "opm",
    "reqpm", "rpm", "wpm", "epm", "mpm", "recpm", "rowspm",
    # Velocity
    "velocityms", "velocitykmh", "velocitymph", "velocityknot",
    # Volume
    "mlitre", "litre", "m3", "Nm3", "dm3", "gallons",
    # Boolean
    "bool", "bool_yes_no", "bool_on_off",
})
