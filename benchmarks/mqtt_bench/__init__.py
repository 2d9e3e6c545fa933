"""Parts of benchmarks/mqtt.py: the load and result clients and the bridge subprocess
(`clients`), and CPU accounting from /proc (`procstat`)."""
