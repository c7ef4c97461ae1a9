"""The mentor: infers a user's resonance key (tone-pace-intent) from a message, routes it to one of four
personas (Lua, Elro, Riri, Nana) with an affinity matrix, grounds the answer in the hub's own facts and
answers through an OpenAI-compatible LLM server, or with a labelled templated answer when none is set."""
