"""Framework adapters: Starlette/FastAPI (`starlette`, `fastapi`) and DNA (`dna`)."""

__all__: list[str] = []
