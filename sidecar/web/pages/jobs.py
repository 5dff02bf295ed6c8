"""The jobs pages. See sidecar.web.pages for RULES/HANDLERS and PageContext."""

RULES: list = []
HANDLERS: dict = {}
