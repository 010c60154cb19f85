"""reelay_sim: a local simulator of the three "Sora" provider protocols reelay speaks.

One threaded WSGI server on a loopback port serves, each under its own prefix:

- ``generate_task`` at ``/generate-task`` (key ``sim-gt-key``, ``Authorization: Bearer``; callbacks),
- ``sorahk`` at ``/sorahk/v1`` (key ``sora-sim-key``, ``Authorization: Bearer``),
- ``openai_videos`` at ``/openai/sora`` (licence ``sim-licence``, raw ``Authorization``),

with results at ``/files/...`` and controls at ``/_sim/...``. Usage::

    from reelay_sim import Simulator

    sim = Simulator().start()
    sim.base_urls["sorahk"]      # "http://127.0.0.1:<port>/sorahk/v1"
    sim.configure("generate_task", generation_seconds=0.5, callback_mode="duplicate")
    ...
    sim.stop()

Standalone: ``python -m reelay_sim --port 8766``. Wire formats follow the agreed wire.md; what it
leaves open is decided in each protocol module's docstring (``generate_task``, ``sorahk``,
``openai_videos``); knobs are in ``knobs``, task timing in ``state``, prompt directives in
``protocol``, callbacks in ``callbacks``, the MP4/PNG bytes in ``media``.
"""

from reelay_sim.knobs import PROTOCOLS
from reelay_sim.simulator import DEFAULT_API_KEYS, Simulator

__all__ = ["DEFAULT_API_KEYS", "PROTOCOLS", "Simulator"]
