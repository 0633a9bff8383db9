"""The optional abstractive summarizer: any OpenAI-compatible chat completions endpoint.

SummarizeMemories is extractive by default (no model beyond the embedder). With
AETHER_SUMMARIZER_URL set, it asks the endpoint instead, through the official `openai` client
(timeouts, retries on 429/5xx). When the endpoint fails, the caller falls back to the
extractive summary and says so in the summary's metadata: a summary is always made.
"""

from __future__ import annotations

from collections.abc import Sequence

from openai import AsyncOpenAI

from ..telemetry import operation

SYSTEM_PROMPT = (
    "You compress an AI agent's memories of one session into a faithful summary for its "
    "long-term memory. Keep names, numbers, dates, decisions and open tasks; add nothing that "
    "is not in the memories. Answer with the summary only, in at most {n} sentences."
)


class SummarizerError(Exception):
    """The endpoint failed or answered with no text."""


class ChatSummarizer:
    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float) -> None:
        self.model = model
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",  # the client insists on one; local servers ignore it
            timeout=timeout_s,
            max_retries=2,
        )

    async def summarize(self, texts: Sequence[str], max_sentences: int) -> str:
        """A summary of `texts` (oldest first) in at most `max_sentences` sentences."""
        listing = "\n".join(f"{i}. {text}" for i, text in enumerate(texts, start=1))
        with operation("aether.summarize", attributes={"aether.summarize.model": self.model}):
            try:
                completion = await self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": SYSTEM_PROMPT.format(n=max_sentences)},
                        {"role": "user", "content": f"Memories, oldest first:\n{listing}"},
                    ],
                    temperature=0,
                )
            except Exception as error:  # every client failure is one kind for the caller
                raise SummarizerError(f"{type(error).__name__}: {error}") from error
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        if not text:
            raise SummarizerError("the endpoint answered with no text")
        return text

    async def aclose(self) -> None:
        await self._client.close()
