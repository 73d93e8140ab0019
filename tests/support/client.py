"""One client interface over REST and GraphQL, so e2e tests run each body over both."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

_counter = itertools.count()

USER = "id email name role tenantId"
WORKFLOW = "id name description version definition createdAt updatedAt"
STEP = "id nodeId type status attempt output error startedAt finishedAt"
RUN = "id workflowId workflowVersion status input output error createdAt startedAt finishedAt"
EVENT = "id runId seq type nodeId data createdAt"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{next(_counter)}-{id(_counter) % 9973}@example.test"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class _Client:
    http: httpx.Client

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()


class RestApi(_Client):
    kind = "rest"

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        response = self.http.request(method, path, json=json, params=params, headers=all_headers)
        self.last_status = response.status_code
        if response.status_code >= 400:
            body = response.json()
            raise ApiError(response.status_code, body["error"]["code"], body["error"]["message"])
        return response.json() if response.content else None

    def register(self, tenant: str, email: str, password: str, name: str) -> Any:
        body = {"tenantName": tenant, "email": email, "password": password, "name": name}
        return self.call("POST", "/api/auth/register", json=body)

    def login(self, email: str, password: str) -> Any:
        return self.call("POST", "/api/auth/login", json={"email": email, "password": password})

    def me(self, token: str | None) -> Any:
        return self.call("GET", "/api/me", token)

    def create_user(self, token: str, **body: Any) -> Any:
        return self.call("POST", "/api/users", token, json=body)

    def create_workflow(self, token: str, **body: Any) -> Any:
        return self.call("POST", "/api/workflows", token, json=body)

    def list_workflows(self, token: str, page: int = 1, page_size: int = 20) -> Any:
        params = {"page": page, "pageSize": page_size}
        return self.call("GET", "/api/workflows", token, params=params)

    def get_workflow(self, token: str, workflow_id: str) -> Any:
        return self.call("GET", f"/api/workflows/{workflow_id}", token)

    def update_workflow(self, token: str, workflow_id: str, **body: Any) -> Any:
        return self.call("PUT", f"/api/workflows/{workflow_id}", token, json=body)

    def delete_workflow(self, token: str, workflow_id: str) -> None:
        self.call("DELETE", f"/api/workflows/{workflow_id}", token)

    def execute(
        self, token: str, workflow_id: str, input: Any = None, key: str | None = None
    ) -> Any:
        headers = {"Idempotency-Key": key} if key else None
        body = {"input": input} if input is not None else {}
        return self.call(
            "POST", f"/api/workflows/{workflow_id}/execute", token, json=body, headers=headers
        )

    def list_runs(
        self, token: str, workflow_id: str, status: str | None = None, page: int = 1
    ) -> Any:
        params: dict[str, Any] = {"page": page}
        if status:
            params["status"] = status
        return self.call("GET", f"/api/workflows/{workflow_id}/runs", token, params=params)

    def get_run(self, token: str, run_id: str) -> Any:
        return self.call("GET", f"/api/runs/{run_id}", token)

    def events(self, token: str, run_id: str, after_seq: int = 0, limit: int = 100) -> Any:
        params = {"afterSeq": after_seq, "limit": limit}
        return self.call("GET", f"/api/runs/{run_id}/events", token, params=params)["items"]

    def cancel(self, token: str, run_id: str) -> Any:
        return self.call("POST", f"/api/runs/{run_id}/cancel", token)


class GraphQLApi(_Client):
    kind = "graphql"

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def gql(self, query: str, token: str | None = None, **variables: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        body = response.json()
        if body.get("errors"):
            error = body["errors"][0]
            code = (error.get("extensions") or {}).get("code", "UNKNOWN")
            raise ApiError(response.status_code, code, error["message"])
        return body["data"]

    def register(self, tenant: str, email: str, password: str, name: str) -> Any:
        q = (
            "mutation($i: RegisterInput!) { register(input: $i) "
            f"{{ token user {{ {USER} }} tenant {{ id name }} }} }}"
        )
        i = {"tenantName": tenant, "email": email, "password": password, "name": name}
        return self.gql(q, i=i)["register"]

    def login(self, email: str, password: str) -> Any:
        q = (
            "mutation($i: LoginInput!) { login(input: $i) "
            f"{{ token user {{ {USER} }} tenant {{ id name }} }} }}"
        )
        return self.gql(q, i={"email": email, "password": password})["login"]

    def me(self, token: str | None) -> Any:
        return self.gql(f"{{ me {{ {USER} }} }}", token)["me"]

    def create_user(self, token: str, **body: Any) -> Any:
        q = f"mutation($i: CreateUserInput!) {{ createUser(input: $i) {{ {USER} }} }}"
        return self.gql(q, token, i=body)["createUser"]

    def create_workflow(self, token: str, **body: Any) -> Any:
        q = f"mutation($i: WorkflowInput!) {{ createWorkflow(input: $i) {{ {WORKFLOW} }} }}"
        return self.gql(q, token, i=body)["createWorkflow"]

    def list_workflows(self, token: str, page: int = 1, page_size: int = 20) -> Any:
        q = (
            "query($p: Int!, $s: Int!) { workflows(page: $p, pageSize: $s) "
            f"{{ items {{ {WORKFLOW} }} page pageSize total }} }}"
        )
        return self.gql(q, token, p=page, s=page_size)["workflows"]

    def get_workflow(self, token: str, workflow_id: str) -> Any:
        q = f"query($id: ID!) {{ workflow(id: $id) {{ {WORKFLOW} }} }}"
        found = self.gql(q, token, id=workflow_id)["workflow"]
        if found is None:
            raise ApiError(200, "NOT_FOUND", "workflow is null")
        return found

    def update_workflow(self, token: str, workflow_id: str, **body: Any) -> Any:
        q = (
            "mutation($id: ID!, $i: WorkflowUpdateInput!) "
            f"{{ updateWorkflow(id: $id, input: $i) {{ {WORKFLOW} }} }}"
        )
        return self.gql(q, token, id=workflow_id, i=body)["updateWorkflow"]

    def delete_workflow(self, token: str, workflow_id: str) -> None:
        q = "mutation($id: ID!) { deleteWorkflow(id: $id) }"
        assert self.gql(q, token, id=workflow_id)["deleteWorkflow"] is True

    def execute(
        self, token: str, workflow_id: str, input: Any = None, key: str | None = None
    ) -> Any:
        q = (
            "mutation($id: ID!, $in: JSON, $k: String) "
            "{ executeWorkflow(id: $id, input: $in, idempotencyKey: $k) "
            f"{{ {RUN} steps {{ {STEP} }} }} }}"
        )
        return self.gql(q, token, id=workflow_id, **{"in": input, "k": key})["executeWorkflow"]

    def list_runs(
        self, token: str, workflow_id: str, status: str | None = None, page: int = 1
    ) -> Any:
        q = (
            "query($w: ID, $s: RunStatus, $p: Int!) "
            "{ runs(workflowId: $w, status: $s, page: $p) "
            f"{{ items {{ {RUN} }} page pageSize total }} }}"
        )
        return self.gql(q, token, w=workflow_id, s=status, p=page)["runs"]

    def get_run(self, token: str, run_id: str) -> Any:
        q = f"query($id: ID!) {{ run(id: $id) {{ {RUN} steps {{ {STEP} }} }} }}"
        found = self.gql(q, token, id=run_id)["run"]
        if found is None:
            raise ApiError(200, "NOT_FOUND", "run is null")
        return found

    def events(self, token: str, run_id: str, after_seq: int = 0, limit: int = 100) -> Any:
        q = (
            "query($r: ID!, $a: Int!, $l: Int!) "
            f"{{ runEvents(runId: $r, afterSeq: $a, limit: $l) {{ {EVENT} }} }}"
        )
        return self.gql(q, token, r=run_id, a=after_seq, l=limit)["runEvents"]

    def cancel(self, token: str, run_id: str) -> Any:
        q = f"mutation($id: ID!) {{ cancelRun(id: $id) {{ {RUN} steps {{ {STEP} }} }} }}"
        return self.gql(q, token, id=run_id)["cancelRun"]


Api = RestApi | GraphQLApi
