"""The same API with the Pythonic names, no datasize, and the richer handler.

Run the simulated controller first:  pyconpro sim      (its built-in tags: test is a produced
DINT, Sine a produced REAL)
then:  python examples/seed_rich_handler.py
(with the package: after ./dev, `. .venv/bin/activate` first, or `./dev sim ...` and
`.venv/bin/python examples/seed_rich_handler.py`)
"""

import time

from pyconpro import Connection, ConsumerHint, TagSample


def show(sample: TagSample) -> None:
    print(f"{sample.time:%H:%M:%S.%f} {sample.plc} {sample.tag} = {sample.value!r} "
          f"({sample.type_name}, raw {sample.raw!r}, seq {sample.cip_sequence}, gap {sample.gap})")


with Connection() as con:
    plc = con.add_plc("127.0.0.2", slot=0)
    for tag in ("test", "Sine"):
        plc.add_consumer(ConsumerHint(tag=tag, rpi=500), show, sample=True).start()
    time.sleep(5)
