"""An a2a-sdk (1.3.0) echo agent for the A2A feature tests (push notifications, replicas, gRPC).

The real SDK server: JSON-RPC (1.0 and 0.3) at `/`, HTTP+JSON under `/rest`, the card, an
in-memory push-notification config store with the SDK's own push sender, and optionally the
SDK's gRPC server (`--grpc-port`, `a2a.server.request_handlers.GrpcHandler`). Each reply names
the replica (`--replica`), so a test sees which replica answered.

Test-only endpoints:
  GET  /_seen        -> every POST/DELETE (HTTP) and every gRPC call received:
                        {"transport", "path", "method" (JSON-RPC or gRPC method), "headers", "body"}
  POST /_seen/reset  -> clears it

    python a2a_test_agent.py --port 9101 [--grpc-port 9102] [--replica r1] [--name echo]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

import sys
from pathlib import Path

# The demo agent's request recorder (examples/a2a_agent/agent.py), shared rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "a2a_agent"))
from agent import SeenRecorder  # noqa: E402

from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import BasePushNotificationSender, InMemoryPushNotificationConfigStore, InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.types.a2a_pb2 import TaskState


class Executor(AgentExecutor):
    def __init__(self, replica: str) -> None:
        self.replica = replica

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task_from_user_message(context.message)
        if not context.current_task:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue=event_queue, task_id=task.id, context_id=task.context_id)
        await updater.update_status(state=TaskState.TASK_STATE_WORKING)
        text = f"[{self.replica}] echo: {get_message_text(context.message)}"
        await updater.add_artifact(parts=[new_text_part(text=text, media_type="text/plain")])
        await updater.update_status(state=TaskState.TASK_STATE_COMPLETED)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue=event_queue, task_id=context.task_id, context_id=context.context_id)
        await updater.cancel()


class Recorder(SeenRecorder):
    """The demo agent's recorder (body read once and replayed), keeping the parsed body too."""

    def entry(self, scope: Scope, body: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return {
            "transport": "http",
            "path": scope["path"],
            "method": parsed.get("method") if isinstance(parsed, dict) else None,
            "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            "body": parsed,
        }


def build(args: argparse.Namespace, seen: list[dict[str, Any]]) -> tuple[Starlette, DefaultRequestHandler]:
    public = args.public_url or f"http://127.0.0.1:{args.port}/"
    interfaces = [AgentInterface(protocol_binding="JSONRPC", protocol_version="1.0", url=public)]
    if args.grpc_port:
        interfaces.append(AgentInterface(protocol_binding="GRPC", protocol_version="1.0", url=f"127.0.0.1:{args.grpc_port}"))
    card = AgentCard(
        name=args.name, description=f"test agent {args.name} ({args.replica})", version="0.1.0",
        default_input_modes=["text/plain"], default_output_modes=["text/plain"],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        supported_interfaces=interfaces,
        skills=[AgentSkill(id="echo", name="Echo", description="echoes", tags=["echo"])],
    )
    store = InMemoryPushNotificationConfigStore()
    sender = BasePushNotificationSender(httpx.AsyncClient(timeout=5), store)
    handler = DefaultRequestHandler(agent_executor=Executor(args.replica), task_store=InMemoryTaskStore(), agent_card=card,
                                    push_config_store=store, push_sender=sender)

    async def seen_get(_: Request) -> JSONResponse:
        return JSONResponse(seen)

    async def seen_reset(_: Request) -> JSONResponse:
        seen.clear()
        return JSONResponse({})

    routes = [Route("/_seen", seen_get, methods=["GET"]), Route("/_seen/reset", seen_reset, methods=["POST"])]
    routes += create_agent_card_routes(card)
    routes += create_rest_routes(handler, path_prefix="/rest")
    routes += create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True)
    app = Starlette(routes=routes)
    app.add_middleware(Recorder, seen=seen)
    return app, handler


async def serve_grpc(handler: DefaultRequestHandler, port: int, seen: list[dict[str, Any]]) -> Any:
    import grpc  # noqa: PLC0415
    from a2a.server.request_handlers import GrpcHandler  # noqa: PLC0415
    from a2a.types import a2a_pb2_grpc  # noqa: PLC0415

    class Recording(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen.append({
                "transport": "grpc",
                "path": details.method,
                "method": details.method.rsplit("/", 1)[-1],
                "headers": {k: (v if isinstance(v, str) else v.hex()) for k, v in details.invocation_metadata},
                "body": None,
            })
            return await continuation(details)

    from a2a.compat.v0_3 import a2a_v0_3_pb2_grpc  # noqa: PLC0415
    from a2a.compat.v0_3.grpc_handler import CompatGrpcHandler  # noqa: PLC0415

    server = grpc.aio.server(interceptors=[Recording()])
    # 1.0 (lf.a2a.v1.A2AService) and 0.3 (a2a.v1.A2AService) on one port, as the SDK serves them.
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)
    a2a_v0_3_pb2_grpc.add_A2AServiceServicer_to_server(CompatGrpcHandler(handler), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--replica", default="r1")
    parser.add_argument("--name", default="echo")
    parser.add_argument("--public-url", default=None)
    args = parser.parse_args()
    seen: list[dict[str, Any]] = []
    app, handler = build(args, seen)
    grpc_server = await serve_grpc(handler, args.grpc_port, seen) if args.grpc_port else None
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    try:
        await server.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
