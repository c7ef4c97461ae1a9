"""Multi-turn conversations per user and session, kept in the store.

A conversation's id is chosen by the caller (`session_id`) and belongs to the user who opened it: another
user naming the same id gets NotFound, never the turns. Once a conversation has more than
`SUMMARIZE_AFTER` turns, the older ones are folded into a summary (by the LLM when one is configured,
else extractively: the first sentence of each older user turn) and only the newest turns travel with a
question.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from clinhub.errors import InvalidInput, NotFound
from clinhub.store.schema import mentor_conversation, mentor_turn

SUMMARIZE_AFTER = 20  # turns kept whole; older ones are summarised
SUMMARY_LIMIT = 2_000  # characters
_SESSION = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?。…])(\s|$)", re.S)


def check_session_id(session_id: str) -> str:
    if not _SESSION.match(session_id or ""):
        raise InvalidInput("session_id must be 1 to 64 letters, digits or . _ : -")
    return session_id


def _owned(conn, session_id: str, username: str):
    row = conn.execute(select(mentor_conversation).where(mentor_conversation.c.id == session_id)).first()
    if row is None or row.username != username:
        return None
    return row


def history(
    store: Engine, session_id: str, username: str, *, turns: int = 10
) -> tuple[str | None, list[dict]]:
    """The summary of the older turns (or None) and the newest `turns` turns, oldest first."""
    check_session_id(session_id)
    with store.connect() as conn:
        row = _owned(conn, session_id, username)
        if row is None:
            return None, []
        rows = conn.execute(
            select(mentor_turn.c.role, mentor_turn.c.content)
            .where(mentor_turn.c.conversation_id == session_id)
            .order_by(mentor_turn.c.seq.desc())
            .limit(turns)
        ).all()
    return row.summary, [{"role": r.role, "content": r.content} for r in reversed(rows)]


def append(
    store: Engine,
    session_id: str,
    username: str,
    question: str,
    answer: str,
    *,
    persona: str,
    resonance_key: str,
    summarize: Callable[[str | None, list[dict]], str] | None = None,
) -> int:
    """Add a question and its answer to the conversation (opening it if new); returns its turn count."""
    check_session_id(session_id)
    now = datetime.now(UTC)
    with store.begin() as conn:
        row = _owned(conn, session_id, username)
        if row is None:
            exists = conn.execute(
                select(func.count())
                .select_from(mentor_conversation)
                .where(mentor_conversation.c.id == session_id)
            ).scalar_one()
            if exists:
                raise NotFound(f"no conversation {session_id!r} of yours")
            try:
                conn.execute(
                    insert(mentor_conversation).values(
                        id=session_id,
                        username=username,
                        created_at=now,
                        updated_at=now,
                        turns=0,
                        summary=None,
                        summarized_turns=0,
                    )
                )
            except IntegrityError:
                raise NotFound(f"no conversation {session_id!r} of yours") from None
            turns, summary, summarized = 0, None, 0
        else:
            turns, summary, summarized = row.turns, row.summary, row.summarized_turns
        conn.execute(
            insert(mentor_turn),
            [
                {
                    "conversation_id": session_id,
                    "seq": turns + 1,
                    "role": "user",
                    "content": question,
                    "persona": None,
                    "resonance_key": resonance_key,
                    "created_at": now,
                },
                {
                    "conversation_id": session_id,
                    "seq": turns + 2,
                    "role": "assistant",
                    "content": answer,
                    "persona": persona,
                    "resonance_key": resonance_key,
                    "created_at": now,
                },
            ],
        )
        turns += 2
        if turns - summarized > SUMMARIZE_AFTER:
            fold_to = turns - SUMMARIZE_AFTER // 2
            older = conn.execute(
                select(mentor_turn.c.role, mentor_turn.c.content)
                .where(
                    mentor_turn.c.conversation_id == session_id,
                    mentor_turn.c.seq > summarized,
                    mentor_turn.c.seq <= fold_to,
                )
                .order_by(mentor_turn.c.seq)
            ).all()
            older_turns = [{"role": r.role, "content": r.content} for r in older]
            summary = (summarize or extractive_summary)(summary, older_turns)[:SUMMARY_LIMIT]
            summarized = fold_to
        conn.execute(
            update(mentor_conversation)
            .where(mentor_conversation.c.id == session_id)
            .values(updated_at=now, turns=turns, summary=summary, summarized_turns=summarized)
        )
    return turns


def extractive_summary(previous: str | None, turns: list[dict]) -> str:
    """The previous summary and the first sentence (at most 160 characters) of each older question."""
    points = []
    for turn in turns:
        if turn["role"] != "user":
            continue
        text = " ".join(turn["content"].split())
        found = _FIRST_SENTENCE.match(text)
        points.append((found[1] if found else text)[:160])
    lines = [previous] if previous else []
    lines += [f"- asked: {p}" for p in points]
    return "\n".join(lines)


def list_conversations(store: Engine, username: str, *, limit: int = 50) -> list[dict]:
    with store.connect() as conn:
        rows = conn.execute(
            select(mentor_conversation)
            .where(mentor_conversation.c.username == username)
            .order_by(mentor_conversation.c.updated_at.desc())
            .limit(limit)
        ).all()
    return [
        {
            "session_id": r.id,
            "turns": r.turns,
            "summarized_turns": r.summarized_turns,
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
        }
        for r in rows
    ]


def delete_conversation(store: Engine, session_id: str, username: str) -> None:
    check_session_id(session_id)
    with store.begin() as conn:
        if _owned(conn, session_id, username) is None:
            raise NotFound(f"no conversation {session_id!r} of yours")
        conn.execute(delete(mentor_turn).where(mentor_turn.c.conversation_id == session_id))
        conn.execute(delete(mentor_conversation).where(mentor_conversation.c.id == session_id))
