"""Webhook endpoints and their delivery log (DESIGN.md, "Webhooks"), the caller's own only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from transcripts.dependencies import CallerDep, DbSessionDep, SettingsDep
from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute, WriteRoute
from transcripts.dialects.agents.envelope import envelope_error_responses, envelope_response
from transcripts.dialects.agents.mapper import webhook_delivery_data, webhook_endpoint_data
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.errors import BadRequest
from transcripts.generated.agents import (
    CreateWebhookEndpointRequest,
    UpdateWebhookEndpointRequest,
    WebhookDeliveryEnvelope,
    WebhookDeliveryListEnvelope,
    WebhookEndpointCreatedEnvelope,
    WebhookEndpointEnvelope,
    WebhookEndpointListEnvelope,
)
from transcripts.services import webhooks

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute, tags=["Webhooks"])

MAX_ROW_ID = 2**63 - 1
EndpointIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The endpoint's id.")]
DeliveryIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The delivery's id.")]


async def create_endpoint(
    body: CreateWebhookEndpointRequest, caller: CallerDep, db: DbSessionDep, settings: SettingsDep
) -> Response:
    endpoint = await webhooks.create_endpoint(
        db,
        caller,
        url=body.url,
        events=body.events,
        description=body.description,
        allow_private=settings.webhook_allow_private_targets,
    )
    return envelope_response(webhook_endpoint_data(endpoint), status_code=201)


async def list_endpoints(caller: CallerDep, db: DbSessionDep) -> Response:
    endpoints = await webhooks.list_endpoints(db, caller)
    return envelope_response([webhook_endpoint_data(endpoint) for endpoint in endpoints])


async def update_endpoint(
    endpoint_id: EndpointIdPath,
    body: UpdateWebhookEndpointRequest,
    caller: CallerDep,
    db: DbSessionDep,
    settings: SettingsDep,
) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise BadRequest("Invalid body.", {"body": ["Give at least one field to change."]})
    nulls = sorted(name for name, value in changes.items() if value is None)
    nulls = [name for name in nulls if name != "description"]  # a description may be cleared
    if nulls:
        raise BadRequest(
            f"Invalid {', '.join(nulls)}.", {name: ["Must not be null."] for name in nulls}
        )
    endpoint = await webhooks.update_endpoint(
        db, caller, endpoint_id, changes, allow_private=settings.webhook_allow_private_targets
    )
    return envelope_response(webhook_endpoint_data(endpoint))


async def delete_endpoint(
    endpoint_id: EndpointIdPath, caller: CallerDep, db: DbSessionDep
) -> Response:
    await webhooks.delete_endpoint(db, caller, endpoint_id)
    return Response(status_code=204)


async def rotate_secret(
    endpoint_id: EndpointIdPath, caller: CallerDep, db: DbSessionDep
) -> Response:
    endpoint = await webhooks.rotate_secret(db, caller, endpoint_id)
    return envelope_response(webhook_endpoint_data(endpoint))


async def send_test(endpoint_id: EndpointIdPath, caller: CallerDep, db: DbSessionDep) -> Response:
    delivery = await webhooks.send_test(db, caller, endpoint_id)
    return envelope_response(webhook_delivery_data(delivery), status_code=202)


async def list_deliveries(
    endpoint_id: EndpointIdPath,
    caller: CallerDep,
    db: DbSessionDep,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="Only deliveries with a smaller id."),
    ] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    found = await webhooks.deliveries(db, caller, endpoint_id, before=before, limit=page_size)
    return envelope_response([webhook_delivery_data(delivery) for delivery in found])


async def replay_delivery(
    delivery_id: DeliveryIdPath, caller: CallerDep, db: DbSessionDep
) -> Response:
    delivery = await webhooks.replay(db, caller, delivery_id)
    return envelope_response(webhook_delivery_data(delivery), status_code=202)


_READ: dict[str, Any] = {"response_class": Response, "openapi_extra": SECURITY}
_WRITE: dict[str, Any] = {**_READ, "route_class_override": WriteRoute}
_ENDPOINT = "/api/webhooks/endpoints/{endpoint_id}/"
_OWN = " Another user's endpoint is the same 404 as an unknown id."

add_slash_agnostic_route(
    router,
    "/api/webhooks/endpoints/",
    list_endpoints,
    methods=["GET"],
    operation_id="listWebhookEndpoints",
    summary="List the caller's webhook endpoints",
    responses={200: {"model": WebhookEndpointListEnvelope}, **envelope_error_responses()},
    **_READ,
)
add_slash_agnostic_route(
    router,
    "/api/webhooks/endpoints/",
    create_endpoint,
    methods=["POST"],
    status_code=201,
    operation_id="createWebhookEndpoint",
    summary="Create a webhook endpoint",
    description=(
        "Events of the sessions the caller can read are POSTed to url in the Standard "
        "Webhooks format (webhook-id, webhook-timestamp, webhook-signature). The answer "
        "carries the signing secret (whsec_...), shown this once."
    ),
    responses={201: {"model": WebhookEndpointCreatedEnvelope}, **envelope_error_responses(413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    _ENDPOINT,
    update_endpoint,
    methods=["PATCH"],
    operation_id="updateWebhookEndpoint",
    summary="Change a webhook endpoint, or re-enable it",
    description="Only the fields given change; is_active true re-enables a disabled endpoint."
    + _OWN,
    responses={200: {"model": WebhookEndpointEnvelope}, **envelope_error_responses(413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    _ENDPOINT,
    delete_endpoint,
    methods=["DELETE"],
    status_code=204,
    operation_id="deleteWebhookEndpoint",
    summary="Delete a webhook endpoint",
    description="The endpoint and its delivery log are gone." + _OWN,
    responses={204: {"description": "Deleted."}, **envelope_error_responses()},
    **_READ,
)
add_slash_agnostic_route(
    router,
    _ENDPOINT + "rotate-secret/",
    rotate_secret,
    methods=["POST"],
    operation_id="rotateWebhookEndpointSecret",
    summary="Rotate an endpoint's signing secret",
    description="A new secret, shown this once; attempts from now on are signed with it." + _OWN,
    responses={200: {"model": WebhookEndpointCreatedEnvelope}, **envelope_error_responses(413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    _ENDPOINT + "test/",
    send_test,
    methods=["POST"],
    status_code=202,
    operation_id="testWebhookEndpoint",
    summary="Send a webhook.test event",
    description="Queued for delivery like any event; the answer is its delivery." + _OWN,
    responses={202: {"model": WebhookDeliveryEnvelope}, **envelope_error_responses(409, 413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    _ENDPOINT + "deliveries/",
    list_deliveries,
    methods=["GET"],
    operation_id="listWebhookDeliveries",
    summary="An endpoint's deliveries, newest first",
    description=(
        "Each delivery with its status and every attempt (response code, error). The next "
        "page: before = the last id of this one." + _OWN
    ),
    responses={200: {"model": WebhookDeliveryListEnvelope}, **envelope_error_responses()},
    **_READ,
)
add_slash_agnostic_route(
    router,
    "/api/webhooks/deliveries/{delivery_id}/replay/",
    replay_delivery,
    methods=["POST"],
    status_code=202,
    operation_id="replayWebhookDelivery",
    summary="Send a delivery's event again",
    description=(
        "A new delivery of the same event, with the same webhook-id. Another user's "
        "delivery is the same 404 as an unknown id."
    ),
    responses={202: {"model": WebhookDeliveryEnvelope}, **envelope_error_responses(409, 413)},
    **_WRITE,
)
