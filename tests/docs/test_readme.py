"""The README's shell commands that talk to the cluster are the ones a test runs."""

from __future__ import annotations

import re

from tests.docs.mermaid import README
from tests.e2e.test_readme_walkthrough import walkthrough_script

_FENCE = re.compile(r"^```[\w-]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_CURL = re.compile(r"(?<![\w./-])curl\s")


def test_every_curl_block_of_the_readme_is_the_walkthrough_the_e2e_tier_executes() -> None:
    blocks = _FENCE.findall(README.read_text())
    with_curl = [block for block in blocks if _CURL.search(block)]
    # tests/e2e/test_readme_walkthrough.py runs this block whole under `bash -euo pipefail`
    # (and tests/compose/test_cluster.py against the containers); a curl block elsewhere would
    # be documentation nobody executes.
    assert with_curl == [walkthrough_script()], (
        "every README block with curl commands must be the '## Walkthrough with curl' block"
    )
