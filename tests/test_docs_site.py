"""The documentation site as built (`make docs`): the API reference shows
each argument's type and its true default, no heading is repeated, the
navigation's titles are the pages' own, and code fits the page's width."""

import html
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.backend_independent
CODE_WIDTH = 80  # characters of a code block visible at the theme's page width


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True,
                         env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _text(fragment):
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def parameters(page, identifier):
    """{name: (type, default)} of the parameter table under `identifier`."""
    start = page.index(f'id="{identifier}"')
    table = page[page.index("<table>", start):page.index("</table>", start)]
    rows = {}
    for row in re.findall(r'<tr class="doc-section-item">(.*?)</tr>', table, re.S):
        cells = [_text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        name, kind, _, default = cells
        rows[name] = (re.sub(r"\s+", " ", kind), default)
    return rows


@pytest.mark.parametrize("page, identifier, expected", [
    ("api/layers", "attnkit.layers.AdditiveAttention", {
        "units": ("int", "required"),
        "kernel_initializer": ("str | Initializer", "'glorot_uniform'"),
        "bias_regularizer": ("str | Regularizer | None", "None"),
        "normalizer": ("str", "'softmax'"),
    }),
    ("api/layers", "attnkit.layers.MultiHeadAttention", {
        "num_heads": ("int", "required"),
        "position": ("PositionScheme | None", "None"),
        "score_mod": ("Callable | None", "None"),
        "bias_constraint": ("str | Constraint | None", "None"),
    }),
    ("api/ops", "attnkit.ops.attention", {
        "query": ("Tensor", "required"),
        "is_causal": ("bool", "False"),
        "q_offset": ("int | Tensor", "0"),
        "normalizer": ("str", "'softmax'"),
    }),
    ("api/models", "attnkit.models.beam_search_decode", {
        "beam_width": ("int", "4"),
        "length_penalty": ("float", "0.0"),
    }),
])
def test_the_api_reference_shows_types_and_true_defaults(site, page, identifier, expected):
    rows = parameters((site / page / "index.html").read_text(), identifier)
    for name, want in expected.items():
        assert rows[name] == want, (name, rows[name])
    missing_type = [name for name, (kind, _) in rows.items() if not kind]
    assert not missing_type


def test_every_documented_parameter_has_a_type(site):
    for page in sorted((site / "api").glob("*/index.html")):
        text = page.read_text()
        for table in re.findall(r"<th>Name</th>\s*<th>Type</th>.*?</table>", text, re.S):
            for row in re.findall(r'<tr class="doc-section-item">(.*?)</tr>', table, re.S):
                cells = [_text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
                assert cells[1] or cells[0].startswith("*"), (page.parent.name, cells[0])


def test_every_parameter_of_a_documented_signature_is_documented():
    """A parameter left out of `Args:` has no row, so no type or default."""
    import griffe

    package = griffe.load("attnkit", search_paths=[str(ROOT)], docstring_parser="google")
    seen, missing = set(), []

    def check(obj):
        function = obj.members["__init__"] if obj.is_class and "__init__" in obj.members else obj
        if obj.docstring is None or not function.is_function:
            return
        documented = {p.name.lstrip("*") for section in obj.docstring.parse("google")
                      if section.kind.value == "parameters" for p in section.value}
        if documented:
            missing.extend(f"{obj.path}({p.name})" for p in function.parameters
                           if p.name not in documented | {"self", "cls"}
                           and p.kind.value not in ("variadic positional", "variadic keyword"))

    def walk(module):
        for name, member in module.members.items():
            if name.startswith("_") or (member.is_alias and not member.target_path.startswith(
                    "attnkit.")):
                continue  # private, or imported from elsewhere
            target = member.final_target if member.is_alias else member
            if target.path in seen:
                continue
            seen.add(target.path)
            if target.is_module and target.path.startswith("attnkit"):
                walk(target)
            elif target.is_class or target.is_function:
                check(target)
                for method in target.members.values() if target.is_class else ():
                    if not method.is_alias and method.is_function and \
                            not method.name.startswith("_"):
                        check(method)

    walk(package)
    assert not missing, missing


def test_no_heading_repeats_the_page_title(site):
    for page in sorted((site / "api").glob("*/index.html")):
        headings = [_text(h) for h in re.findall(r"<h[1-6][^>]*>(.*?)</h[1-6]>",
                                                   page.read_text(), re.S)]
        title = headings[0].rstrip("¶").strip()
        module = title.rsplit(".", 1)[-1]
        repeats = [h for h in headings[1:] if h.rstrip("¶").strip() in (title, module)]
        assert not repeats, (title, repeats)
        first = re.search(r'<div class="doc doc-contents first">\s*<p>(.*?)</p>',
                          page.read_text(), re.S)
        if first:
            assert not _text(first.group(1)).startswith(title), title


def test_navigation_titles_are_the_pages_titles(site):
    index = (site / "index.html").read_text()
    links = re.findall(r'<a href="([^"#]*)" class="md-nav__link[^"]*">\s*'
                       r'<span class="md-ellipsis">(.*?)</span>', index, re.S)
    assert len(links) > 10
    for href, title in links:
        page = (site / href / "index.html") if href not in ("", ".") else site / "index.html"
        page = page.resolve()
        h1 = re.search(r"<h1[^>]*>(.*?)</h1>", page.read_text(), re.S)
        assert h1 and _text(h1.group(1)).rstrip("¶").strip() == _text(title), (href, title)


def code_lines():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        inside = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("```"):
                inside = not inside
            elif inside:
                yield path.relative_to(ROOT), number, line


def test_code_blocks_fit_the_page():
    wide = [f"{path}:{number} ({len(line)})" for path, number, line in code_lines()
            if len(line) > CODE_WIDTH]
    assert not wide, wide


def test_figures_fit_the_page():
    """No figure is wider than about twice the page (it would be shrunk past
    reading): at most 1000 pixels, which the theme shows at ~80%."""
    import struct

    for image in sorted((ROOT / "docs" / "img").glob("*.png")):
        width, _ = struct.unpack(">II", image.read_bytes()[16:24])
        assert width <= 1000, (image.name, width)
