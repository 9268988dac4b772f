"""Property-based fuzzing of the service from its own OpenAPI schema (schemathesis 4), against the real app: the real
ML-100K pipeline with the LLM ranking on the session's in-process engine, the real chat agent and a fresh store
(`served` in this folder's conftest).

Every operation of `/openapi.json` gets generated requests, valid ones (positive), invalid ones (negative) and valid
ones grounded in the data (positive, with each generated user and item id replaced by a real ML-100K one, so the
requests get past "unknown user" into the pipeline, the engine, the store and the agent), once with a valid key and
once without. No answer may be a 5xx or an exception out of the app; every answer must conform to the schema where
schemathesis checks it (a documented status, its content type, the body against the documented model), and an invalid
request must be refused with a 4xx. Failures are collected, not shrunk, and reported together with the request as
curl and, for a 500, the server's traceback. The closing line gives how many cases ran.

schemathesis 4.32.5 cannot validate a response whose OpenAPI 3.1 schema has a tuple (`prefixItems`): it rewrites the
tuple into draft-4 `items: [...]` and then fails its own Draft 2020-12 meta-validation (`InvalidSchema`). Such answers
(`Profile.top_genres` was one, before it became `{genre, count}` objects) would be validated here against the
documented schema as published, with a Draft 2020-12 validator, while schemathesis runs its other checks; the closing
line counts them ("bodies validated here"; none in the last run, 758 cases).
"""

from __future__ import annotations

import logging
from collections import Counter

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.entrypoints.api.conftest import KEYS, bearer

pytestmark = pytest.mark.llm

EXAMPLES = 25
"""Generated cases per operation, generation mode and key (derandomized: the same cases every run)."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def schema(llm_settings, served):
    from llmrec.entrypoints.api.app import create_app
    from llmrec.entrypoints.api.settings import ServiceSettings

    pipeline, agent = served
    app = create_app(llm_settings, ServiceSettings(api_keys=KEYS[0], rate_limit_per_minute=0, max_body_bytes=50_000),
                     pipeline=pipeline, agent=agent)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()


def ground(case, rng, users: list[str], items: list[str]):
    """A positive case with its ids made real: `user_id` (body or path) a dataset user, `item_id` and `history` items."""
    if isinstance(case.body, dict):
        if isinstance(case.body.get("user_id"), str):
            case.body["user_id"] = rng.choice(users)
        if isinstance(case.body.get("item_id"), str):
            case.body["item_id"] = rng.choice(items)
        if isinstance(case.body.get("history"), list):
            case.body["history"] = [rng.choice(items) for _ in case.body["history"]]
    if case.path_parameters and "user_id" in case.path_parameters:
        case.path_parameters["user_id"] = rng.choice(users)
    return case


def fuzz_operation(operation, mode: str, headers: dict, data: tuple[list[str], list[str]], ran: Counter, statuses: Counter,
                   here: Counter, failures: list, traces: list) -> None:
    """Up to EXAMPLES generated cases of one operation in one mode; each answer checked, failures collected."""
    if mode == "grounded" and not (operation.body or operation.path_parameters):
        return  # no ids to ground: its positive cases were all there is
    negative = mode == "negative"
    checks = CHECKS + ([negative_data_rejection] if negative else [])
    strategy = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE if negative else GenerationMode.POSITIVE)
    if mode == "grounded":
        strategy = st.tuples(strategy, st.randoms(use_true_random=False)).map(lambda pair: ground(*pair, *data))

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        ran[(operation.label, mode)] += 1
        seen = len(traces)
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # noqa: BLE001 - an exception out of the app is a crash: reported with its request
            failures.append(f"{operation.label} ({mode}): the app raised {type(exc).__name__}: {exc}\n"
                            f"{case.as_curl_command(headers=headers)}")
            return
        statuses[response.status_code] += 1
        try:
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except InvalidSchema:  # the tuple limitation in the module's docstring
                here[operation.label] += 1
                case.validate_response(response, checks=[c for c in checks if c is not response_schema_conformance], headers=headers)
                problem = documented_body_problem(operation, response)
                if problem:
                    failures.append(f"{operation.label} ({mode}) -> {response.status_code}: {problem}")
        except FailureGroup as group:
            trace = "\n".join(traces[seen:])
            failures.append(f"{operation.label} ({mode}) -> {response.status_code} {response.text[:300]}\n{group}"
                            + (f"\nserver log:\n{trace}" if trace else ""))

    try:
        run()
    except Unsatisfiable:  # nothing to negate (an operation without parameters): no case in this mode
        pass


def documented_body_problem(operation, response) -> str | None:
    """The JSON body against its documented schema (OpenAPI 3.1 is Draft 2020-12), refs resolved in the document."""
    raw = operation.schema.raw_schema
    documented = raw["paths"][operation.path][operation.method.lower()]["responses"][str(response.status_code)]
    body_schema = documented["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator({**body_schema, "components": raw["components"]})
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(response.json())]
    return "; ".join(errors[:5]) or None


class _Traces(logging.Handler):
    """The app's error log lines (with tracebacks), so a 500 is reported with its cause."""

    def __init__(self, lines: list[str]):
        super().__init__(logging.ERROR)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("keyed", [True, False], ids=["with-key", "without-key"])
def test_no_generated_request_gets_a_server_error_or_breaks_the_schema(schema, served, keyed):
    dataset = served[0].dataset
    data = (sorted(dataset.users()), sorted(dataset.items))
    headers = bearer(KEYS[0]) if keyed else {}
    ran, statuses, here, failures, traces = Counter(), Counter(), Counter(), [], []
    handler = _Traces(traces)
    logging.getLogger("llmrec").addHandler(handler)
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            for mode in ("positive", "negative", "grounded"):
                fuzz_operation(operation, mode, headers, data, ran, statuses, here, failures, traces)
    finally:
        logging.getLogger("llmrec").removeHandler(handler)
    total = sum(ran.values())
    print(f"\n{total} cases {'with' if keyed else 'without'} a key over {len(operations)} operations; statuses "
          f"{dict(sorted(statuses.items()))}; bodies validated here (tuples): {dict(here)}; per operation: "
          + ", ".join(f"{label} {mode} {n}" for (label, mode), n in sorted(ran.items())))
    assert {"POST /v1/recommend", "POST /v1/feedback", "POST /v1/chat", "GET /v1/users/{user_id}/profile"} <= {op.label for op in operations}
    with_input = [op.label for op in operations if op.body or op.path_parameters]  # the others have one request each
    assert len(with_input) >= 5 and all(ran[(label, mode)] >= EXAMPLES // 2 for label in with_input
                                        for mode in ("positive", "negative", "grounded")), ran
    assert not failures, f"{len(failures)} of {total} cases failed:\n\n" + "\n\n".join(failures[:10])
    if keyed:
        assert statuses[201] and statuses[200], "no generated request was accepted: the fuzzing never got past validation"
    else:
        assert statuses[401] and 201 not in statuses, "a write went through without a key"
