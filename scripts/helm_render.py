#!/usr/bin/python3
"""Render the kvmesh Helm chart without a `helm` binary (like `helm template`).

Supports only the small Go-template subset the chart's templates use, and fails loudly on
anything else, so a template that real Helm would read differently cannot slip through:

  {{ .Values.a.b }}  {{ .Release.Name }}  {{ .Release.Namespace }}  {{ .Chart.Name }}
  {{ .Chart.Version }}  {{ .Chart.AppVersion }}  {{ .Files.Get "path" }}
  {{- ... -}}                     whitespace trimming as in Go templates
  {{/* comment */}}
  {{ if X }} ... {{ else }} ... {{ end }}   (Go truthiness: false, 0, "", empty list/map, nil)
  {{ if not X }}
  pipelines X | f a b  (the value becomes the last argument), functions:
    quote X, default D X, toYaml X, indent N X, nindent N X

Usage:
  scripts/helm_render.py [--chart helm/kvmesh] [--release kvmesh] [--namespace kvmesh-system]
                         [--set a.b=value ...] [--include-crds] [--create-namespace] [-o FILE]

--include-crds puts the chart's crds/ files first (helm install applies them before templates);
--create-namespace adds a Namespace with the restricted Pod Security labels. deploy/kvmesh.yaml is
this script's output with `--include-crds --create-namespace` and default values; the test
tests/helm_render_test.sh re-renders it and fails if the checked-in bundle drifted.
Needs Debian's python3-yaml (/usr/bin/python3).
"""
import argparse
import os
import re
import sys

import yaml


class RenderError(Exception):
    pass


TOKEN = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def lex(text):
    """Splits into ('text', s) and ('action', expr) items, applying {{- and -}} trimming."""
    items = []
    pos = 0
    for m in TOKEN.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1) == "-":
            chunk = chunk.rstrip(" \t\r\n")
        items.append(["text", chunk])
        items.append(["action", m.group(2), m.group(3) == "-"])
        pos = m.end()
    items.append(["text", text[pos:]])
    # Right trims apply to the following text.
    for i, item in enumerate(items):
        if item[0] == "action" and item[2] and i + 1 < len(items):
            items[i + 1][1] = items[i + 1][1].lstrip(" \t\r\n")
    return items


def parse(items):
    """Builds a tree of text/expr/if nodes."""
    root = []
    stack = [(root, None)]
    for item in items:
        body = stack[-1][0]
        if item[0] == "text":
            if item[1]:
                body.append(("text", item[1]))
            continue
        expr = item[1]
        if expr.startswith("/*"):
            if not expr.endswith("*/"):
                raise RenderError("unterminated comment: " + expr)
            continue
        word = expr.split(None, 1)[0] if expr else ""
        if word == "if":
            node = {"cond": expr[2:].strip(), "then": [], "else": []}
            body.append(("if", node))
            stack.append((node["then"], node))
        elif word == "else":
            if stack[-1][1] is None or expr != "else":
                raise RenderError("unsupported or misplaced: {{ %s }}" % expr)
            node = stack.pop()[1]
            stack.append((node["else"], node))
        elif word == "end":
            if stack[-1][1] is None:
                raise RenderError("{{ end }} without {{ if }}")
            stack.pop()
        elif word in ("range", "with", "define", "template", "include", "block"):
            raise RenderError("unsupported action: {{ %s }}" % expr)
        else:
            body.append(("expr", expr))
    if len(stack) != 1:
        raise RenderError("missing {{ end }}")
    return root


def split_args(segment):
    """Words of one pipeline segment; "quoted strings" kept whole."""
    return re.findall(r'"(?:[^"\\]|\\.)*"|\S+', segment)


class Context:
    def __init__(self, values, release, namespace, chart, chart_dir):
        self.values = values
        self.release = release
        self.namespace = namespace
        self.chart = chart
        self.chart_dir = chart_dir

    def atom(self, word):
        if word.startswith('"'):
            return bytes(word[1:-1], "utf-8").decode("unicode_escape")
        if re.fullmatch(r"-?[0-9]+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word.startswith(".Values"):
            value = self.values
            for part in [p for p in word[len(".Values"):].split(".") if p]:
                value = value.get(part) if isinstance(value, dict) else None
            return value
        fixed = {
            ".Release.Name": self.release,
            ".Release.Namespace": self.namespace,
            ".Release.Service": "Helm",
            ".Chart.Name": self.chart["name"],
            ".Chart.Version": self.chart["version"],
            ".Chart.AppVersion": self.chart.get("appVersion", ""),
        }
        if word in fixed:
            return fixed[word]
        raise RenderError("unsupported value: " + word)

    def call(self, name, args):
        if name == "quote":
            (x,) = args
            return '"%s"' % to_text(x).replace("\\", "\\\\").replace('"', '\\"')
        if name == "default":
            d, x = args
            return x if truthy(x) else d
        if name == "toYaml":
            (x,) = args
            if x is None:
                return "null"
            return yaml.dump(x, Dumper=_HelmDumper, default_flow_style=False, sort_keys=True).rstrip("\n")
        if name in ("indent", "nindent"):
            n, x = args
            pad = " " * int(n)
            out = "\n".join(pad + line if line else line for line in to_text(x).split("\n"))
            return "\n" + out if name == "nindent" else out
        if name == "not":
            (x,) = args
            return not truthy(x)
        if name == ".Files.Get":
            (path,) = args
            with open(os.path.join(self.chart_dir, path), encoding="utf-8") as f:
                return f.read()
        raise RenderError("unsupported function: " + name)

    def eval(self, expr):
        value = None
        for i, segment in enumerate(s.strip() for s in expr.split("|")):
            words = split_args(segment)
            if not words:
                raise RenderError("empty pipeline segment in: " + expr)
            head, rest = words[0], [self.atom(w) for w in words[1:]]
            if i > 0:
                rest.append(value)
            is_function = not head.startswith(".") or head == ".Files.Get"
            if is_function:
                value = self.call(head, rest)
            elif rest:
                raise RenderError("arguments after a value: " + segment)
            else:
                value = self.atom(head)
        return value


class _HelmDumper(yaml.SafeDumper):
    """Quotes strings that would read back as another type with double quotes, as Helm does."""


def _represent_str(dumper, data):
    style = None
    if data == "" or not isinstance(yaml.safe_load(data), str):
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_HelmDumper.add_representer(str, _represent_str)


def truthy(x):
    return not (x is None or x is False or x == 0 or x == "" or x == [] or x == {})


def to_text(x):
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (dict, list)):
        raise RenderError("a map or list printed without toYaml: %r" % (x,))
    return str(x)


def render_nodes(nodes, ctx):
    out = []
    for kind, node in nodes:
        if kind == "text":
            out.append(node)
        elif kind == "expr":
            out.append(to_text(ctx.eval(node)))
        else:
            branch = node["then"] if truthy(ctx.eval(node["cond"])) else node["else"]
            out.append(render_nodes(branch, ctx))
    return "".join(out)


def render_template(text, ctx):
    return render_nodes(parse(lex(text)), ctx)


def set_value(values, assignment):
    key, _, raw = assignment.partition("=")
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.split(".")
    node = values
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def render(chart_dir, release, namespace, sets=(), include_crds=False, create_namespace=False):
    with open(os.path.join(chart_dir, "Chart.yaml"), encoding="utf-8") as f:
        chart = yaml.safe_load(f)
    with open(os.path.join(chart_dir, "values.yaml"), encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    for s in sets:
        set_value(values, s)
    ctx = Context(values, release, namespace, chart, chart_dir)
    docs = ["# Generated by scripts/helm_render.py from helm/kvmesh (release %s, namespace %s);\n"
            "# do not edit: change the chart and re-render (tests/helm_render_test.sh checks it).\n"
            % (release, namespace)]
    if create_namespace:
        docs.append("---\n# Namespace (renderer --create-namespace; helm install --create-namespace)\n"
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n"
                    "    pod-security.kubernetes.io/enforce: restricted\n"
                    "    pod-security.kubernetes.io/enforce-version: latest\n" % namespace)
    if include_crds:
        crd_dir = os.path.join(chart_dir, "crds")
        for name in sorted(os.listdir(crd_dir)):
            with open(os.path.join(crd_dir, name), encoding="utf-8") as f:
                docs.append("---\n# Source: %s/crds/%s\n%s" % (chart["name"], name, f.read()))
    tdir = os.path.join(chart_dir, "templates")
    for name in sorted(os.listdir(tdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(tdir, name), encoding="utf-8") as f:
            text = f.read()
        try:
            rendered = render_template(text, ctx)
        except RenderError as e:
            raise RenderError("%s: %s" % (name, e))
        body = "\n".join(line.rstrip() for line in rendered.strip("\n").split("\n"))
        if not body.strip() or yaml.safe_load(body) is None:
            continue  # a template switched off by its {{ if }}
        docs.append("---\n# Source: %s/templates/%s\n%s\n" % (chart["name"], name, body))
    return "".join(docs)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chart", default=os.path.join(here, "..", "helm", "kvmesh"))
    p.add_argument("--release", default="kvmesh")
    p.add_argument("--namespace", default="kvmesh-system")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--include-crds", action="store_true")
    p.add_argument("--create-namespace", action="store_true")
    p.add_argument("-o", "--output", default="-")
    a = p.parse_args()
    try:
        out = render(a.chart, a.release, a.namespace, a.set, a.include_crds, a.create_namespace)
    except (RenderError, OSError, yaml.YAMLError, ValueError) as e:
        print("helm_render: %s" % e, file=sys.stderr)
        return 1
    if a.output == "-":
        sys.stdout.write(out)
    else:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
