"""mark_agents: the MARK memory agents, the chat graph and the library API for chatbot backends.

from mark_agents import MemoryAgent, Settings
agent = MemoryAgent(Settings(home="./data"))
reply = agent.chat("alice", "My dog is called Biscuit.")
agent.flush()                                   # wait for background memory extraction
print(agent.chat("alice", "What is my dog's name?").reply)
"""

from mark_agents.agent import ChatReply, MemoryAgent, RememberResult
from mark_agents.builder import BuildReport, Decision, MemoryBuilder
from mark_agents.config import AgentConfig, LLMSettings, Settings
from mark_agents.llm import LLMClient, LLMError, LLMOutputError, LLMUnavailable, Usage, UsageMeter, connect
from mark_agents.recall import Recall, RecalledMemory, RecalledTurn, recall

__all__ = [
    "AgentConfig",
    "BuildReport",
    "ChatReply",
    "Decision",
    "LLMClient",
    "LLMError",
    "LLMOutputError",
    "LLMSettings",
    "LLMUnavailable",
    "MemoryAgent",
    "MemoryBuilder",
    "Recall",
    "RecalledMemory",
    "RecalledTurn",
    "RememberResult",
    "Settings",
    "Usage",
    "UsageMeter",
    "connect",
    "recall",
]
