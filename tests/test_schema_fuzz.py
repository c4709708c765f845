"""Schemathesis against the device port's OpenAPI schema, over real mutual TLS: no 500s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from privml.transport._coordinator import Coordinator, RunConfig
from privml.transport._serve import ServerThread
from privml.transport.server import ServerState, create_device_app
from privml.transport.tls import (
    Revocations,
    client_ssl_context,
    init_federation,
    issue_client,
    server_ssl_context,
)

HDR = {"X-Privml-Protocol": "1"}


class Live:
    url: str
    session: requests.Session


LIVE = Live()


@pytest.fixture(scope="module")
def device_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    paths = init_federation(tmp / "fed")
    cert, key = issue_client(paths.dir, "fuzzer")
    coord = Coordinator(RunConfig(rounds=2, clients_per_round=1), run_id="fuzz",
                        model_spec_json="{}", initial={"w": np.zeros(4, np.float32)})
    state = ServerState(coord, Revocations(paths.revoked).is_revoked, max_body=64 * 1024)
    with ServerThread(create_device_app(state),
                      ssl_context=server_ssl_context(paths, require_client_cert=True)) as srv:
        ctx = client_ssl_context(paths.ca_cert, cert=cert, key=key)
        raw = httpx.get(f"{srv.url}/openapi.json", verify=ctx).json()
        session = requests.Session()
        session.verify = str(paths.ca_cert)
        session.cert = (str(cert), str(key))
        LIVE.url, LIVE.session = srv.url, session
        yield schemathesis.openapi.from_dict(raw)
        session.close()


def test_no_server_errors(device_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in device_schema.get_all_operations()]
    statuses: dict[str, set[int]] = {}
    assert {op.path for op in operations} >= {"/v1/enrol", "/v1/task", "/v1/update"}
    for op in operations:

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            for headers in (HDR, {}):  # with and without the protocol header
                response = case.call(base_url=LIVE.url, session=LIVE.session, headers=headers,
                                     verify=LIVE.session.verify, cert=LIVE.session.cert)
                assert response.status_code < 500, (case.method, case.path, response.text)
                statuses.setdefault(case.path, set()).add(response.status_code)
                if response.status_code >= 400:
                    assert set(response.json()) >= {"error", "detail"}

        check()
    # the fuzz reached the update checks, not only the protocol-header gate
    assert statuses["/v1/update"] - {426}, statuses
