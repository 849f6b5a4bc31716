"""posemu's locustfile: POS terminals under Locust (needs ``pip install 'posemu[load]'``).

    posemu host --listen 127.0.0.1:5000 --fleet 4000 &
    locust -f "$(python -c 'import emulator.locustfile as m; print(m.__file__)')" \\
        --host 127.0.0.1:5000 --headless -u 100 -r 10 -t 60s
    # across machines: one `--master`, any number of `--worker --master-host=…` with the same file

Options (``--pos-profile``, ``--pos-mix``, …) are described in :mod:`emulator.locust_user`.
"""

from __future__ import annotations

from emulator.locust_user import PosTerminalUser


class Terminal(PosTerminalUser):
    """A POS terminal of the fleet: signs on, then balance inquiries and purchases at the counter's pace."""
