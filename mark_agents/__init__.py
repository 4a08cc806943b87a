"""MARK agents: chatbots with long-term memory that keeps learning, and their LLM access (mark_agents.llm)."""
