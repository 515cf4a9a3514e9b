"""The original README's "Full Example", unchanged but for the IP (the simulator's).

Run the simulated controller first:  pyconpro sim --config examples/sim-seed-tags.toml
then:  python examples/seed_full_example.py
(with the package: after ./dev, `. .venv/bin/activate` first, or `./dev sim ...` and
`.venv/bin/python examples/seed_full_example.py`)
"""
from pyconpro import Connection, ConsumerHint
import time
def handler(data): print(data)
def handler2(data, a, b=None): print(data, a, b)
con = Connection()
con.Start()
plc = con.addPLC("127.0.0.2", slot=0)
c = plc.addConsumer(ConsumerHint(tag="test", datasize=6, rpi=1000, otrpi=1100), handler)
c2 = plc.addConsumer(ConsumerHint(tag="test2", datasize=6, rpi=1000, otrpi=1100), handler2, args=(1,), kwargs={"b": 2})
c.Start(); c2.Start()
time.sleep(10)
c.Stop(); c2.Stop()
con.Join(); con.Close()
