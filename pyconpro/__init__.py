"""pyconpro: consume Allen-Bradley Logix produced tags over EtherNet/IP Class 1.

The user-facing front: the seed-compatible in-process API and the ``pyconpro`` CLI.
"""

__version__ = "0.1.0"
