"""Entry point: `python -m hil.camera --stream name=cam1,... [--stream ...]`."""

from hil.camera.server import main

raise SystemExit(main())
