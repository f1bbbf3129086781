"""The OpenAPI document fuzzed with schemathesis against a running server: whatever schemathesis sends
(valid and schema-violating bodies, odd paths and parameters), no answer is a 5xx, and every answer's status,
content type and body are the ones the document promises."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kakehashi.server.openapi_document import SPEC

pytestmark = pytest.mark.slow  # 50 generated requests for every operation
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# unloading the only model would turn the rest of the run into (correct) 503s
OPERATIONS = {
    op.label: op
    for op in (result.ok() for result in schemathesis.openapi.from_dict(SPEC).get_all_operations())
    if not op.path.endswith("/unload")
}


@pytest.fixture(scope="module")
def fuzzed_server(serve_module):
    return serve_module(None)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_errors_and_the_document_holds(fuzzed_server, label):
    @given(OPERATIONS[label].as_strategy())
    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case):
        case.call_and_validate(base_url=fuzzed_server.url, checks=CHECKS)

    fuzz()


def test_the_server_still_answers_after_the_fuzzing(fuzzed_server):
    assert fuzzed_server.client.get("/v2/health/ready").status_code == 200
    assert "Traceback" not in fuzzed_server.log()
