"""``python -m frugalvl.commands.demo_check``: before ``make demo``, name every missing weight at once.

The demo needs the CLIP and the SimFeatUp checkpoint. This check fetches what it can into the caches
and, when something is still missing, prints one line naming each missing weight by the make
variable that sets it (``FRUGALVL_CLIP=`` / ``FRUGALVL_UPSAMPLER=``), then exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import UserError

MAKE_VARIABLES = ("FRUGALVL_CLIP=", "FRUGALVL_UPSAMPLER=")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m frugalvl.commands.demo_check",
        description="Check that the demo's weights are at hand (make demo runs this).",
    )
    parser.add_argument("--clip", required=True, help="the value of FRUGALVL_CLIP")
    parser.add_argument("--upsampler", required=True, help="the value of FRUGALVL_UPSAMPLER")
    args = parser.parse_args(argv)
    from ..models.weights import check_segearth_ov_weights

    try:
        check_segearth_ov_weights(args.clip, args.upsampler, names=MAKE_VARIABLES)
    except UserError as exc:
        print(f"frugalvl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
