"""Schema-based fuzzing of the API from its own OpenAPI description (schemathesis + Hypothesis): for
every operation, valid and invalid requests as an admin, an investigator and an anonymous caller.
Whatever comes in, the answer is never a 500, every error has the stable shape, and successful JSON
answers match the documented response schemas. On SQLite and on PostgreSQL (which, unlike SQLite,
refuses NUL characters in text). Bounded (a few examples per operation and identity, derandomised),
so it takes under a minute per backend on two cores."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from service_helpers import backend, make_served, run_search  # noqa: F401

pytestmark = pytest.mark.slow

EXAMPLES = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 6}
IDENTITIES = ("admin", "ivan", None)


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory, pipeline):
    app = make_served(tmp_path_factory.mktemp(f"fuzz-{backend.name}") / "data", pipeline, backend.new_url())
    record = run_search(app.client("ivan"), case_id="FUZZ-1")
    app.search_id = record["id"]
    yield app
    app.close()


def test_no_server_errors_from_fuzzed_requests(served):
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", served.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    calls = 0
    for identity in IDENTITIES:
        headers = {"Authorization": f"Bearer {served.tokens[identity]}"} if identity else {}
        for operation in operations:
            if operation.method.upper() == "DELETE" and operation.path in ("/api/session",):
                continue  # signing out a token caller is a no-op; nothing to fuzz
            for mode, examples in EXAMPLES.items():
                strategy = operation.as_strategy(generation_mode=mode)

                @given(case=strategy)
                @settings(
                    max_examples=examples,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate],
                )
                def fuzz(case):
                    nonlocal calls
                    calls += 1
                    checks = [not_a_server_error]
                    if mode is GenerationMode.POSITIVE:
                        checks += [content_type_conformance, response_schema_conformance]
                    try:
                        response = case.call_and_validate(headers=headers, checks=checks)
                    except Exception as exc:  # noqa: BLE001 - collect, report all at the end
                        failures.append(
                            f"{identity or 'anonymous'} {mode.value} {operation.method.upper()} "
                            f"{operation.path}: {str(exc)[:600]}"
                        )
                        return
                    if response.status_code >= 400:
                        body = json.loads(response.content)
                        assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body

                try:
                    fuzz()
                except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
                    assert mode is GenerationMode.NEGATIVE
    assert calls > 300
    assert not failures, "\n\n".join(failures[:20])
    # the app is still whole: the audit chain verifies
    assert served.service.audit.verify() == []
