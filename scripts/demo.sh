#!/usr/bin/env bash
# The main job on the embedded defaults: a local store and the embedded local model (started on demand).
# 1. a chat that learns (two sessions, piped into the REPL), 2. what the store now knows, and why,
# 3. a ConvoMem evaluation on the bundled sample (table + plots).
set -euo pipefail
cd "$(dirname "$0")/.."
export MARK_HOME="${MARK_HOME:-$PWD/.mark-home}"
MARK=.venv/bin/mark
USER_ID=${DEMO_USER:-demo-user}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Data directory: $MARK_HOME (set MARK_HOME to change it). Starting the local model..."
$MARK llm serve

$MARK memory purge --user "$USER_ID" --yes >/dev/null   # a clean demo user each run

say "Session 1: telling the assistant a few things"
printf '%s\n' "Hi! My dog is called Biscuit." "I live in Denver and I work as a nurse." \
  "Please keep your answers short." "/exit" | $MARK chat --user "$USER_ID" --session first

say "Session 2, later: a fact changes"
printf '%s\n' "I moved from Denver to Lisbon last month." "/exit" | $MARK chat --user "$USER_ID" --session second

say "Session 3: does it remember?"
printf '%s\n' "What is my dog's name?" "/why" "/memories" "/exit" | $MARK chat --user "$USER_ID" --session third

say "The audit trail (every add, confirm and supersede, with its reason)"
$MARK memory history --user "$USER_ID"

say "Hybrid, decay-ranked search with every score component"
$MARK memory search "Where does the user live?" --user "$USER_ID" --explain --history

say "ConvoMem on the bundled sample: full context vs RAG vs MARK (a few minutes on 2 cores)"
$MARK eval convomem --sample --methods full_context,rag,hybrid,mark --out runs/convomem-sample

say "Done. Results: runs/convomem-sample/summary.csv and the PNG plots beside it."
echo "The local model server keeps running for further chats; stop it with: $MARK llm stop"
