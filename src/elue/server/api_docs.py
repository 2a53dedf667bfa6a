"""The OpenAPI description flattened for the /api/docs page (FastAPI's Swagger UI loads from a CDN)."""

from __future__ import annotations

import re

from markupsafe import Markup, escape


def _schema_type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        if "prefixItems" in schema:
            return f"[{', '.join(_schema_type(s) for s in schema['prefixItems'])}]"
        return f"list[{_schema_type(schema.get('items', {}))}]"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"dict[str, {_schema_type(schema['additionalProperties'])}]"
    return schema.get("format") == "binary" and "file" or schema.get("type", "object")


def _inline_code(text: str) -> Markup:
    """An OpenAPI description is Markdown: its `code` spans as <code> (the page showed the backticks); the rest
    escaped."""
    parts = re.split(r"`([^`\n]+)`", text)
    return Markup("").join(
        escape(p) if i % 2 == 0 else Markup("<code>%s</code>") % p for i, p in enumerate(parts)
    )


def _fields(schema: dict) -> list[dict]:
    """An object schema's properties: name, type and whether it is required."""
    required = set(schema.get("required", []))
    return [
        {"name": k, "type": _schema_type(v), "required": k in required}
        for k, v in schema.get("properties", {}).items()
    ]


def endpoints(spec: dict) -> list[dict]:
    """The OpenAPI description flattened for the /api/docs page."""
    components = spec.get("components", {}).get("schemas", {})
    out = []
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            params = [
                {
                    "name": p["name"],
                    "where": p["in"],
                    "type": _schema_type(p.get("schema", {})),
                    "required": p.get("required", False),
                }
                for p in op.get("parameters", [])
            ]
            body, body_type = [], ""
            content = op.get("requestBody", {}).get("content", {})
            for ctype, c in content.items():
                schema = c.get("schema", {})
                if "$ref" in schema:
                    schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
                body = _fields(schema)
                body_type = ctype
            answers = []
            for code, r in op.get("responses", {}).items():
                kinds = r.get("content", {})
                schema = kinds.get("application/json", {}).get("schema")
                what = _schema_type(schema) if schema else ", ".join(kinds) or "no body"
                ref = (schema or {}).get("$ref") or (schema or {}).get("items", {}).get("$ref")
                answers.append(
                    {
                        "code": code,
                        "type": what,
                        "model": ref.rsplit("/", 1)[-1] if ref else None,  # the model's section on the page
                        "description": r.get("description", ""),
                    }
                )
            out.append(
                {
                    "id": f"{method}-{path}".replace("/", "-").strip("-"),
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": _inline_code(op.get("description", "")),
                    "params": params,
                    "body": body,
                    "body_type": body_type,
                    "answers": answers,
                }
            )
    return out


def schemas(spec: dict) -> list[dict]:
    """The answers' (and bodies') models of the description: name and fields, for the /api/docs page."""
    out = []
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        fields = _fields(schema)
        if fields:
            out.append({"name": name, "fields": fields})
        elif "enum" in schema:
            out.append(
                {"name": name, "fields": [{"name": "", "type": _schema_type(schema), "required": True}]}
            )
    return out
