"""``python -m chat_client`` runs the terminal client (same as ``chat-client``)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
