"""The Go-template subset, the tabwriter clone and the docker formatting helpers."""

from __future__ import annotations

from typing import Any

import pytest

from netstack.cli import render
from netstack.cli.template import TemplateError, parse

NET = {
    "Name": "web",
    "Internal": False,
    "EnableIPv6": True,
    "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.0.0.0/24"}, {"Subnet": "fd00::/64"}], "Options": None},
    "Options": {"b": "2", "a": "1"},
    "Labels": {"team": "net", "x": "<&>"},
    "Containers": {"c2": {"Name": "two"}, "c1": {"Name": "one"}},
    "Tags": ["x", "y"],
    "MTU": 1500,
}


@pytest.mark.parametrize(
    "src, expected",
    [
        ("plain", "plain"),
        ("{{.Name}}", "web"),
        ("{{.IPAM.Driver}}", "default"),
        ("{{.Missing}}", "<no value>"),
        ("{{.Internal}} {{.EnableIPv6}} {{.MTU}}", "false true 1500"),
        ("{{json .Labels}}", '{"team":"net","x":"\\u003c\\u0026\\u003e"}'),
        ("{{json .Tags}}", '["x","y"]'),
        ('{{index .Labels "team"}}', "net"),
        ('{{index .Labels "nope"}}', ""),
        ("{{index .Tags 1}}", "y"),
        ("{{range .Containers}}{{.Name}},{{end}}", "one,two,"),
        ("{{range $k, $v := .Options}}{{$k}}={{$v}} {{end}}", "a=1 b=2 "),
        ("{{range $i, $c := .IPAM.Config}}{{$i}}:{{$c.Subnet}};{{end}}", "0:10.0.0.0/24;1:fd00::/64;"),
        ("{{range .Nothing}}x{{else}}empty{{end}}", "empty"),
        ("{{if .Internal}}in{{else}}out{{end}}", "out"),
        ("{{if .EnableIPv6}}v6{{end}}", "v6"),
        ("{{if .Internal}}a{{else if .EnableIPv6}}b{{else}}c{{end}}", "b"),
        ("{{with .IPAM}}{{.Driver}}{{end}}", "default"),
        ("{{lower .Name}}{{upper .Name}}{{title .Name}}", "webWEBWeb"),
        ('{{join .Tags ","}}', "x,y"),
        ("{{.Name | upper}}", "WEB"),
        ("{{len .Tags}}", "2"),
        ('{{if eq .Name "web"}}yes{{end}}', "yes"),
        ("{{if not .Internal}}open{{end}}", "open"),
        ("{{if and .EnableIPv6 .Name}}both{{end}}", "both"),
        ('{{printf "%s/%v" .Name .MTU}}', "web/1500"),
        ('{{$n := .Name}}{{range .Tags}}{{$n}}-{{.}} {{end}}', "web-x web-y "),
        ("{{range .Tags}}{{$.Name}}{{end}}", "webweb"),
        ("{{.Options}}", "map[a:1 b:2]"),
        ("{{.Tags}}", "[x y]"),
        ("{{.IPAM.Options}}", "<no value>"),
        ("a  {{- .Name -}}  b", "awebb"),
        ("{{(index .IPAM.Config 0).Subnet}}", "10.0.0.0/24"),
        ('{{split "a:b" ":"}}', "[a b]"),
        ('{{"q\\"s"}}', 'q"s'),
        ("{{/* comment */}}x", "x"),
    ],
)
def test_templates(src: str, expected: str) -> None:
    assert parse(src).execute(NET) == expected


def test_json_of_whole_object_keeps_key_order() -> None:
    assert parse("{{json .}}").execute({"b": 1, "a": [True, None]}) == '{"b":1,"a":[true,null]}'


@pytest.mark.parametrize(
    "src, fragment",
    [
        ("{{.Name", "unclosed action"),
        ("{{if .X}}a", "unexpected EOF"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{nofunc .X}}", 'function "nofunc" not defined'),
        ("{{$undefined}}", 'undefined variable "$undefined"'),
    ],
)
def test_template_errors(src: str, fragment: str) -> None:
    with pytest.raises(TemplateError, match=fragment.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")):
        parse(src).execute(NET)


def test_fields_of_a_row_object() -> None:
    row = render.Row("*formatter.networkContext", {"Name": "n", "ID": "abc"}, {"k": "v"})
    assert parse('{{.Name}} {{.ID}} {{.Label "k"}} {{.Label "z"}}').execute(row) == "n abc v "
    assert parse("{{json .}}").execute(row) == '{"ID":"abc","Name":"n"}'
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type \\*formatter.networkContext"):
        parse("{{.Nope}}").execute(row)


def test_tabwrite_matches_go_tabwriter() -> None:
    text = "NETWORK ID\tNAME\tDRIVER\tSCOPE\n0123456789ab\tbridge\tbridge\tlocal\nabc\ta-very-long-name\tnull\tlocal\n"
    assert render.tabwrite(text) == (
        "NETWORK ID     NAME               DRIVER    SCOPE\n"
        "0123456789ab   bridge             bridge    local\n"
        "abc            a-very-long-name   null      local\n"
    )


def test_tabwrite_column_blocks() -> None:
    # A line with fewer cells ends the column block: the lines after it align on their own.
    text = "a\tb\nlonger-cell\tc\nno tabs here\nx\ty\n"
    assert render.tabwrite(text) == "a             b\nlonger-cell   c\nno tabs here\nx         y\n"


def test_format_rows_table_json_and_template() -> None:
    rows = [render.Row("t", {"ID": "1", "Name": "a"}), render.Row("t", {"ID": "2", "Name": "bb"})]
    headers = {"ID": "ID", "Name": "NAME"}
    default = "table {{.ID}}\t{{.Name}}"
    assert render.format_rows("", rows, headers, default) == "ID        NAME\n1         a\n2         bb\n"
    assert render.format_rows("table {{.Name}}", rows, headers, default) == "NAME\na\nbb\n"
    assert render.format_rows("json", rows, headers, default) == '{"ID":"1","Name":"a"}\n{"ID":"2","Name":"bb"}\n'
    assert render.format_rows("{{.Name}}\\t{{.ID}}", rows, headers, default) == "a\t1\nbb\t2\n"
    assert render.format_rows("table", [], headers, default) == "ID        NAME\n"


@pytest.mark.parametrize(
    "names, ordered",
    [
        (["net10", "net9", "bridge", "Net"], ["Net", "bridge", "net9", "net10"]),
        (["a2b", "a10b", "a1b"], ["a1b", "a2b", "a10b"]),
    ],
)
def test_natural_sort(names: list[str], ordered: list[str]) -> None:
    assert sorted(names, key=render.natural_key) == ordered


@pytest.mark.parametrize(
    "rfc, go",
    [
        ("2024-05-09T10:11:12.123456789Z", "2024-05-09 10:11:12.123456789 +0000 UTC"),
        ("2024-05-09T10:11:12.500000Z", "2024-05-09 10:11:12.5 +0000 UTC"),
        ("2024-05-09T10:11:12Z", "2024-05-09 10:11:12 +0000 UTC"),
        ("2024-05-09T12:11:12+02:00", "2024-05-09 12:11:12 +0200 +0200"),
        ("", ""),
    ],
)
def test_go_time(rfc: str, go: str) -> None:
    assert render.go_time(rfc) == go


def test_truncate_id() -> None:
    assert render.truncate_id("sha256:" + "a" * 64) == "a" * 12
    assert render.truncate_id("abc") == "abc"


def test_text_of_values() -> None:
    from netstack.cli.template import text

    values: list[tuple[Any, str]] = [(1.0, "1"), (1.5, "1.5"), (None, "<no value>"), ({"b": [1]}, "map[b:[1]]")]
    for value, shown in values:
        assert text(value) == shown
