"""An agent that fetches URLs with the standard library, unchanged, through the kernel's egress
proxy. With ``network = true`` its sandbox has its own network namespace whose only way out is
``HTTP(S)_PROXY`` (set by the kernel): the proxy admits the agent's ``egress`` rules, refuses
everything else with a 403 whose text says why, and journals every connection.

``python agent.py URL...`` prints one ``REPORT {json}`` line: for each URL, the status and the
first line of the body (or of the refusal).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def fetch(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return {"status": answer.status, "text": answer.read(200).decode(errors="replace").splitlines()[0]}
    except urllib.error.HTTPError as refused:  # the proxy's refusal is an HTTP answer
        return {"status": refused.code, "text": refused.read(300).decode(errors="replace").strip(),
                "refused": refused.headers.get("X-Clove-Egress-Refused")}  # fmt: skip
    except OSError as err:
        return {"status": None, "text": str(err)}


if __name__ == "__main__":
    print("REPORT " + json.dumps({url: fetch(url) for url in sys.argv[1:]}), flush=True)
