"""`clinhub hl7`: listen, send, search and show messages, the error queue, replay, process."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from clinhub.errors import InvalidInput
from clinhub.hl7 import messages, mllp
from clinhub.hub import Hub
from clinhub.platform import audit
from clinhub.platform.cli import CLI_ACTOR

console = Console()
app = typer.Typer(
    help="HL7 v2: the MLLP listener and client, the message store, the error queue, replay.",
    no_args_is_help=True,
)


@app.command("listen")
def listen_command(
    port: int | None = typer.Option(None, min=0, max=65535, help="Port (default: CLINHUB_MLLP_PORT, 2575)."),
    host: str | None = typer.Option(None, help="Bind address (default: CLINHUB_HOST)."),
    tls_cert: Path | None = typer.Option(None, help="PEM certificate: listen with TLS."),
    tls_key: Path | None = typer.Option(None, help="PEM private key for --tls-cert."),
    idle_timeout: float = typer.Option(300.0, min=1, help="Close a connection idle this many seconds."),
    no_mapping: bool = typer.Option(False, "--no-mapping", help="Only store and ACK; map later."),
) -> None:
    """Run the MLLP listener: store each message, ACK it after the commit, map it to FHIR behind."""
    with Hub() as hub:
        hub.migrate()
        server = mllp.MLLPServer(
            hub,
            host or hub.settings.host,
            hub.settings.mllp_port if port is None else port,
            ssl_context=mllp.server_ssl_context(tls_cert, tls_key),
            idle_timeout=idle_timeout,
            process=not no_mapping,
        )
        console.print(
            f"MLLP listening on {server.host}:{server.port}{' (TLS)' if tls_cert else ''}; Ctrl-C stops"
        )
        try:
            asyncio.run(server.serve_forever())
        except KeyboardInterrupt:
            console.print("stopped")


@app.command("send")
def send_command(
    file: Path = typer.Argument(..., help="A file of one or more HL7 v2 messages (a batch is fine)."),
    host: str = typer.Option("127.0.0.1", help="The MLLP listener's host."),
    port: int = typer.Option(2575, min=1, max=65535, help="The MLLP listener's port."),
    concurrency: int = typer.Option(1, min=1, max=256, help="Connections to use."),
    window: int = typer.Option(
        1, min=1, max=10_000, help="Messages in flight per connection (1: wait for each ACK)."
    ),
    tls: bool = typer.Option(False, "--tls", help="Connect with TLS."),
    ca_file: Path | None = typer.Option(None, help="CA certificate to trust for --tls."),
) -> None:
    """Send the messages of FILE over MLLP and summarise the ACK codes; exit 1 unless every one is AA."""
    import ssl

    bodies = mllp.read_messages(file)
    if not bodies:
        raise InvalidInput(f"no HL7 messages in {file}")
    context = None
    if tls:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    with Progress(
        TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as progress:
        task = progress.add_task("send", total=len(bodies))
        result = asyncio.run(
            mllp.send_messages(
                host,
                port,
                bodies,
                concurrency=concurrency,
                window=window,
                progress=lambda n: progress.advance(task, n),
                ssl_context=context,
            )
        )
    table = Table("ACK code", "messages", title=f"{result.sent:,} acknowledged in {result.seconds:.1f} s")
    for code, count in sorted(result.codes.items()):
        table.add_row(code, f"{count:,}")
    if result.failed:
        table.add_row("[red]no answer[/red]", f"{result.failed:,}")
    console.print(table)
    console.print(
        f"{result.rate:,.0f} messages/s; ACK latency p50 {result.percentile(0.5) * 1000:.1f} ms, "
        f"p99 {result.percentile(0.99) * 1000:.1f} ms"
    )
    if result.failed or set(result.codes) - {"AA"}:
        raise typer.Exit(1)


def _criteria(**options) -> messages.MessageFilter:
    return messages.MessageFilter(
        message_type=options.get("type"),
        trigger_event=options.get("trigger"),
        status=options.get("status"),
        sender=options.get("sender"),
        control_id=options.get("control_id"),
        since=options.get("since"),
        until=options.get("until"),
        patient_identifier=options.get("patient"),
        text=options.get("text"),
        ids=options.get("ids") or None,
    )


def _print_messages(found: dict, title: str) -> None:
    table = Table("id", "received", "type", "sender", "control id", "status", "ACK", "error", title=title)
    for row in found["messages"]:
        table.add_row(
            str(row["id"]),
            (row["received_at"] or "")[:19].replace("T", " "),
            f"{row['message_type']}^{row['trigger_event']}" if row["trigger_event"] else row["message_type"],
            escape(row["sending_application"] or row["sending_facility"]),
            escape(row["control_id"]),
            row["status"],
            row["ack_code"] or "",
            escape((row["error"] or "")[:80]),
        )
    console.print(table)


TYPE = typer.Option(None, "--type", help="MSH-9.1, e.g. ADT.")
TRIGGER = typer.Option(None, "--trigger", help="MSH-9.2, e.g. A01.")
STATUS = typer.Option(None, "--status", help=f"One of {', '.join(messages.STATUSES)}.")
SENDER = typer.Option(None, "--sender", help="MSH-3 or MSH-4.")
CONTROL = typer.Option(None, "--control-id", help="MSH-10.")
SINCE = typer.Option(None, "--since", help="Received at or after (ISO date/time).")
UNTIL = typer.Option(None, "--until", help="Received before (ISO date/time).")
PATIENT = typer.Option(None, "--patient", help="A PID-3 identifier value.")
TEXT = typer.Option(None, "--text", help="Text anywhere in the raw message.")


@app.command("messages")
def messages_command(
    message_type: str | None = TYPE,
    trigger: str | None = TRIGGER,
    status: str | None = STATUS,
    sender: str | None = SENDER,
    control_id: str | None = CONTROL,
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    patient: str | None = PATIENT,
    text: str | None = TEXT,
    limit: int = typer.Option(50, min=1, max=1000, help="Show at most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Search stored messages, newest first."""
    criteria = _criteria(
        type=message_type,
        trigger=trigger,
        status=status,
        sender=sender,
        control_id=control_id,
        since=since,
        until=until,
        patient=patient,
        text=text,
    )
    with Hub() as hub:
        found = messages.search(hub.store, criteria, limit=limit)
        audit.record(hub.store, actor=CLI_ACTOR, action="hl7.search", resource_type="HL7Message")
    if as_json:
        print(json.dumps(found, indent=2))
        return
    _print_messages(found, f"{found['total']:,} messages match (showing {len(found['messages'])})")


@app.command("show")
def show_command(
    message_id: int = typer.Argument(..., min=1, help="The message id."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show one message: raw text, parsed segments and the FHIR resources it produced."""
    with Hub() as hub:
        body = messages.get_message(hub.store, message_id)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="hl7.read",
            resource_type="HL7Message",
            resource_id=str(message_id),
        )
    if as_json:
        print(json.dumps(body, indent=2))
        return
    console.print(
        f"message {body['id']}: {body['message_type']}^{body['trigger_event']} from "
        f"{escape(body['sending_application'])} control id {escape(body['control_id'])}, status "
        f"{body['status']}, ACK {body['ack_code']}"
    )
    if body["error"]:
        console.print(f"[red]error:[/red] {escape(body['error'])}")
    console.print(escape(body["raw"].replace("\r", "\n")), highlight=False)
    console.print("resources: " + (", ".join(body["resources"]) or "none"))


@app.command("errors")
def errors_command(limit: int = typer.Option(50, min=1, max=1000, help="Show at most this many.")) -> None:
    """The error queue: messages that could not be accepted or mapped, with the reason."""
    with Hub() as hub:
        found = messages.error_queue(hub.store, limit=limit)
        audit.record(hub.store, actor=CLI_ACTOR, action="hl7.errors", resource_type="HL7Message")
    _print_messages(found, f"{found['total']:,} messages in the error queue")


@app.command("replay")
def replay_command(
    ids: list[int] | None = typer.Argument(None, help="Message ids to replay."),
    message_type: str | None = TYPE,
    trigger: str | None = TRIGGER,
    status: str | None = STATUS,
    sender: str | None = SENDER,
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    limit: int = typer.Option(10_000, min=1, help="Replay at most this many."),
) -> None:
    """Map messages to FHIR again after a mapping fix: by id, or a filter such as --status error."""
    criteria = _criteria(
        ids=ids, type=message_type, trigger=trigger, status=status, sender=sender, since=since, until=until
    )
    with Hub() as hub:
        result = messages.replay(hub.store, criteria, limit=limit)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="hl7.replay",
            resource_type="HL7Message",
            detail=result.__dict__,
        )
    console.print(
        f"replayed {result.processed:,} messages ({result.resources:,} FHIR resources); "
        f"{result.errors:,} still failing"
    )
    if result.errors:
        raise typer.Exit(1)


@app.command("process")
def process_command() -> None:
    """Map every stored message not yet mapped to FHIR (what the listener does behind its ACKs)."""
    total = messages.ProcessResult()
    with Hub() as hub:
        while True:
            part = messages.process_pending(hub.store, 2000)
            if part.processed + part.errors == 0:
                break
            total.processed += part.processed
            total.errors += part.errors
            total.resources += part.resources
        counts = messages.counts(hub.store)
    console.print(
        f"mapped {total.processed:,} messages to {total.resources:,} FHIR resources; {total.errors:,} errors"
    )
    console.print("by status: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
