"""python -m service.healthcheck: exit 0 when /readyz answers 200 (the container HEALTHCHECK).

Standard library only, so the check costs milliseconds and needs no curl in the image.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = os.environ.get("CONVBRIDGE_HEALTHCHECK_URL", "http://127.0.0.1:8000/readyz")
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # our own URL, from the settings
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
