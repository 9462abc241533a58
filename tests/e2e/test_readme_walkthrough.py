"""The README's curl walkthrough, run as written against a real cluster, so it cannot drift."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from deploy.devcluster import Cluster
from services.auth.settings import DEMO_PASSWORD

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_script() -> str:
    section = README.read_text().split("## Walkthrough with curl", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def json_documents(output: str) -> list[Any]:
    """The JSON bodies curl printed back to back, in order."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(output):
        if output[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(output, position)
        documents.append(document)
    return documents


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_walkthrough_logs_in_orders_and_is_refused_after_logout(
    cluster: Cluster, tmp_path: Path
) -> None:
    script = walkthrough_script()
    assert "GW=http://localhost:8000\n" in script
    script = script.replace("GW=http://localhost:8000\n", f"GW={cluster.url}\n")
    script = script.replace(DEMO_PASSWORD, cluster.demo_password)

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    created, listing, logged_out, refused = json_documents(result.stdout)
    assert created["item"] == "espresso beans"
    assert created["quantity"] == 2
    assert created["id"] in [order["id"] for order in listing["orders"]]
    assert logged_out == {"status": "logged_out"}
    assert refused["error"] == "no_session"
