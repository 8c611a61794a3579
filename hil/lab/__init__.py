"""The pair under test as labgrid sees it: resources, drivers and the pair strategy.

The drills (hil.drills) only ever use the protocols in hil.lab.protocols; each kind of target
(namespaces, QEMU boards, a real pair in a lab) has drivers that implement them, chosen by the
labgrid environment file in hil/env/.
"""
