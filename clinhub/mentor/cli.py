"""`clinhub mentor`: ask the mentor in the terminal, see the personas, route a key, evaluate inference."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clinhub.errors import NotFound
from clinhub.hub import Hub
from clinhub.mentor.engine import Ask, Mentor
from clinhub.mentor.personas import load_personas
from clinhub.mentor.resonance import evaluate, load_examples, shared_model
from clinhub.mentor.router import route
from clinhub.mentor.vocab import ResonanceKey

app = typer.Typer(
    help="The mentor: questions answered by the persona that fits the asker, grounded in the hub's data.",
    no_args_is_help=True,
)
console = Console()


def _role_of(hub: Hub, user: str | None) -> tuple[str, str]:
    if user is None:
        return "cli", "admin"  # the operator at the terminal reads the store directly anyway
    from clinhub.platform import auth

    found = next((u for u in auth.list_users(hub.store) if u["username"] == user), None)
    if found is None:
        raise NotFound(f"no user {user!r}")
    return user, found["role"]


@app.command("ask")
def ask_command(
    text: str = typer.Argument(..., help="Your question or message."),
    key: str = typer.Option(None, "--key", help="tone-pace-intent (default: inferred from the text)."),
    persona: str = typer.Option(None, "--persona", help="Answer as Lua, Elro, Riri or Nana."),
    mode: str = typer.Option("full", "--mode", help="Prompt mode: full or summary_light."),
    lang: str = typer.Option(None, "--lang", help="Answer language: en or ko (default: the text's)."),
    session: str = typer.Option(None, "--session", help="Keep the conversation under this id."),
    user: str = typer.Option(None, "--user", help="Ask as this user (their role decides the facts)."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it arrives."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole response as JSON."),
) -> None:
    """Ask the mentor; prints the persona, the routing and the answer."""
    with Hub() as hub:
        username, role = _role_of(hub, user)
        mentor = Mentor(hub.store, hub.cache, hub.settings)
        ask = Ask(
            text=text,
            resonance_key=key,
            session_id=session,
            prompt_mode=mode,
            language=lang,
            persona=persona,
            user=username,
            role=role,
        )
        if stream and not as_json:
            head, pieces = mentor.stream(ask)
            console.print(f"[bold]{head['persona_used']}[/] ({head['resonance_key']})")
            for piece in pieces:
                console.print(escape(piece), end="")
            console.print()
            return
        answer = mentor.process(ask)
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    routing = answer["routing"]
    console.print(
        f"[bold]{answer['persona_used']}[/] · key {answer['resonance_key']} · confidence "
        f"{routing['confidence']:.2f} · second {routing['secondary']}"
    )
    console.print(f"[dim]{escape(routing['reasoning'])}[/]")
    if answer.get("label"):
        console.print(f"[yellow]({answer['label']})[/]")
    console.print(escape(answer["content"]))
    if answer["facts"]:
        table = Table("source", "fact", "value", title="Facts used")
        for fact in answer["facts"]:
            table.add_row(fact["source"], escape(fact["label"]), escape(str(fact["value"])))
        console.print(table)


@app.command("personas")
def personas_command() -> None:
    """The four personas."""
    table = Table("name", "title", "strengths")
    for persona in load_personas().values():
        table.add_row(persona.name, persona.title, ", ".join(persona.strengths))
    console.print(table)


@app.command("route")
def route_command(key: str = typer.Argument(..., help="tone-pace-intent")) -> None:
    """Score the four personas for a resonance key."""
    routing = route(ResonanceKey.parse(key))
    table = Table("persona", "score")
    for name, score in sorted(routing.scores.items(), key=lambda item: -item[1]):
        table.add_row(name, f"{score:.4f}")
    console.print(table)
    console.print(
        f"primary {routing.primary}, secondary {routing.secondary}, confidence {routing.confidence}"
    )
    console.print(escape(routing.reasoning))


@app.command("evaluate")
def evaluate_command(
    examples: Path = typer.Argument(
        ..., help="A labelled JSON Lines file (text, lang, tone, pace, intent).", exists=True, dir_okay=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Accuracy of the inference and of the keyword baseline on a labelled set (e.g. a held-out one)."""
    with Hub() as hub:
        report = evaluate(shared_model(hub.settings.data_dir), load_examples(examples))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table(
        "group",
        "method",
        "tone",
        "pace",
        "intent",
        title=f"{report['examples']} examples ({report['method']})",
    )
    for group in report["model"]:
        for name in ("model", "baseline"):
            scores = report[name][group]
            table.add_row(group, name, *(f"{scores[p]:.1%}" for p in ("tone", "pace", "intent")))
    console.print(table)
