"""Docker's variable expansion: the cases of BuildKit's shell lexer tests (envVarTest, wordsTest,
lex_test.go), each with the result BuildKit gives."""

from __future__ import annotations

import pytest
from pydock.errors import DockerfileError
from pydock.expand import (
    EXPANDED_ARGS,
    PROXY_ARGS,
    check,
    chomp_heredoc,
    expand,
    heredoc_markers,
    parse_arg_values,
    parse_heredoc_marker,
    parse_key_values,
    split_words,
)

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

# (word, expected) from buildkit frontend/dockerfile/shell/envVarTest (the "A" and "U" rows).
ENV_VAR_CASES = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he\\'llo", "he'llo"),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hel\'lo"', "hel'lo"),
    ("'hello\\'", "hello\\"),
    ("'hello\\there'", "hello\\there"),
    ("'hello\\\\there'", "hello\\\\there"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("$1", ""),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"),
    ("\\${}aaa", "${}aaa"),
    ("he\\${}", "he${}"),
    ("he\\${}xx", "he${}xx"),
    ("he${hi}", "he"),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ('"$PWD"', "/home"),
    ("'$PWD'", "$PWD"),
    ("'\\$PWD'", "\\$PWD"),
    ("'\"hello\"'", '"hello"'),
    ("'he\\$PWD'", "he\\$PWD"),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("안녕하세요", "안녕하세요"),
    ("안'녕'하세요", "안녕하세요"),
    ("안녕\\'하세요", "안녕'하세요"),
    ('"안녕\\t하세요"', "안녕\\t하세요"),
    ("안녕$1x", "안녕x"),
    ("안녕${XXX:-${YYY:-yyy}}xx", "안녕yyyxx"),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    ("${aaa}}", "}"),
    ("${aaa:-bbb}}", "bbb}"),
    ("${aaa:-bbb}", "bbb"),
    ("${aaa:-${bbb:-ccc}}", "ccc"),
    ("${aaa:-bbb {foo}", "bbb {foo"),
]

ENV_VAR_ERRORS = [
    "he'llo", "he\\\\'llo", '"hello', '"hello\\"', "'hello", "${}", "${}aaa", "he${}", "he${}xx",
    "he${.}", "he${XXX:YYY}", "he${PWD", "he${PWD:=000}xx", "안'녕하세요", "안녕${}",
    "${{aaa}", "${aaa", "${{aaa:-bbb}", "${aaa:-bbb", "${aaa:-bbb ${foo}", "${:}", "${:-bbb}",
    "${:+bbb}",
]


@pytest.mark.parametrize(("word", "expected"), ENV_VAR_CASES)
def test_env_var_table(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


@pytest.mark.parametrize("word", ENV_VAR_ERRORS)
def test_env_var_table_errors(word: str) -> None:
    with pytest.raises(DockerfileError, match="failed to process"):
        expand(word, ENV)
    with pytest.raises(DockerfileError):  # a syntax error whatever the values
        check(word)


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(DockerfileError) as exc:
        expand("he${PWD", ENV)
    assert str(exc.value) == "failed to process \"he${PWD\": syntax error: missing '}'"
    with pytest.raises(DockerfileError, match="bad substitution"):
        expand("${}", ENV)
    with pytest.raises(DockerfileError, match=r"unsupported modifier \(:=\) in substitution"):
        expand("${PWD:=x}", ENV)
    with pytest.raises(DockerfileError, match="matching double-quote"):
        expand('"x', ENV)
    with pytest.raises(DockerfileError, match="matching single-quote"):
        expand("'x", ENV)


# -- ${X?msg}, ${X-w}, ${X+w} and the colon forms (lex_test.go) --------------------------------


def test_mandatory_variables() -> None:
    set_env, empty, unset = {"VAR": "plain", "ARG": "x"}, {"VAR": "", "ARG": "x"}, {"ARG": "x"}
    no_empty, no_unset = "${VAR:?message here$ARG}", "${VAR?message here$ARG}"
    assert expand(no_empty, set_env) == "plain"
    for env in (empty, unset):
        with pytest.raises(DockerfileError, match="VAR: message herex"):
            expand(no_empty, env)
    assert expand(no_unset, set_env) == "plain"
    assert expand(no_unset, empty) == ""
    with pytest.raises(DockerfileError, match="VAR: message herex"):
        expand(no_unset, unset)
    with pytest.raises(DockerfileError, match="BAZ: is not allowed to be unset"):
        expand("${BAZ:?}", {})
    with pytest.raises(DockerfileError, match="BAZ: is not allowed to be empty"):
        expand("${BAZ:?}", {"BAZ": ""})
    check("${VAR:?must be set}")  # not a syntax error


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("x ${UNUSED}", {}, "x "),
        ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc"),
        ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc"),
        ("${FOO:-}", {"FOO": "xxx"}, "xxx"),
        ("${FOO:-}", {}, ""),
        ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb "),
        ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  "),
        ("${FOO?aaa}", {"FOO": "xxx"}, "xxx"),
        ("${BAR?bbb}", {"BAR": ""}, ""),
        # patterns: # ## % %% / //
        ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
        ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
        ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
        ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
        ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
        ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
        ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
        ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
        ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
        ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
        ("${FOO%y*}", {"FOO": "xxyy"}, "xxy"),
        ("${FOO%%y*}", {"FOO": "xxyy"}, "xx"),
        ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
         "/foo.*/*.txt - /foo..*.txt"),
        ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
         "/tmp/bar.txt - /bar.txt"),
        ("${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
         {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"},
         "/foo/b/c.txt - /foo/c.txt"),
        ("${FOO/$NEEDLE/$REPLACEMENT}",
         {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
         "https://google.de"),
        ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
        ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
        ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
        ("${FOO///}", {}, ""),
        ("${FOO/x/a$${B\\}}", {"FOO": "x"}, "a{B\\}"),  # $$: a special parameter, unset
        # "//" goes through Go's ReplaceAllString, whose template reads $0 as the match
        ("${FOO//x/\\$0}", {"FOO": "axb"}, "a\\xb"),
        ("${FOO/x/\\$0}", {"FOO": "axb"}, "a\\$0b"),
    ],
)
def test_modifiers(word: str, env: dict[str, str], expected: str) -> None:
    assert expand(word, env) == expected


@pytest.mark.parametrize("word", ["${FOO=aaa}", "${FOO=:aaa}", "${FOO=}", "${FOO//ww}",
                                  "${FOO//}", "${FOO#\\x}"])
def test_modifier_errors(word: str) -> None:
    with pytest.raises(DockerfileError):
        expand(word, {"FOO": "xxyy"})


def test_release_file_name_with_optional_variant() -> None:
    word = ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}"
            ".tar.gz")
    env = {"VERSION": "v1.2.3", "TARGETOS": "linux"}
    assert expand(word, {**env, "TARGETARCH": "arm", "TARGETVARIANT": "v7"}) == \
        "something-v1.2.3.linux-arm-v7.tar.gz"
    assert expand(word, {**env, "TARGETARCH": "arm64", "TARGETVARIANT": ""}) == \
        "something-v1.2.3.linux-arm64.tar.gz"
    assert expand(word, {**env, "TARGETARCH": "arm64"}) == "something-v1.2.3.linux-arm64.tar.gz"


def test_special_parameters_and_digits() -> None:
    env = {"1": "one", "12": "twelve", "@": "at"}
    assert expand("$12x", env) == "twelvex"   # all the digits
    assert expand("$@x", env) == "atx"        # one special character
    assert expand("$$", {}) == ""
    assert expand("${#}", {}) == ""
    assert expand("a$", {}) == "a$"
    assert expand("$ x", {}) == "$ x"


# -- the escape character ------------------------------------------------------------------------


def test_backtick_escape() -> None:
    env = {"A": "x"}
    assert expand("C:\\path\\$A", env, escape="`") == "C:\\path\\x"
    assert expand("`$A", env, escape="`") == "$A"
    assert expand('"a`"b"', env, escape="`") == 'a"b'
    assert expand("a``b", env, escape="`") == "a`b"


def test_heredoc_content_keeps_quotes() -> None:
    env = {"A": "x"}
    assert expand("'$A' \"$A\"\n", env, process_quotes=False) == "'x' \"x\"\n"


# -- word splitting (buildkit wordsTest, EXPOSE) ---------------------------------------------------


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("hello", {}, ["hello"]),
        ("hello${hi}bye", {}, ["hellobye"]),
        ("hello${hi}bye", {"hi": "hi"}, ["hellohibye"]),
        ("hello${space}bye", {"space": "abc  def"}, ["helloabc", "defbye"]),
        ('hello"${space}"bye', {"space": "abc  def"}, ["helloabc  defbye"]),
        ('hello "${space}"bye', {"space": "abc  def"}, ["hello", "abc  defbye"]),
        ("hello${leading}def", {"leading": "  ab c"}, ["hello", "ab", "cdef"]),
        ('hello"${leading}" def', {"leading": "  ab c"}, ["hello  ab c", "def"]),
        ('hello"${leading}"', {"leading": "  ab c"}, ["hello  ab c"]),
        ("hello${leading}", {"leading": "  ab c"}, ["hello", "ab", "c"]),
        ("hello${trailing}", {"trailing": "ab c   "}, ["helloab", "c"]),
        ("hello${trailing}d", {"trailing": "ab c   "}, ["helloab", "c", "d"]),
        ('hello"${trailing}"d', {"trailing": "ab c   "}, ["helloab c   d"]),
        ('hel"lo${trailing}"', {"trailing": "ab c   "}, ["helloab c   "]),
        ('hello" there  "', {}, ["hello there  "]),
        ("hello there     ", {}, ["hello", "there"]),
        ("hello\\ there", {}, ["hello there"]),
        ('hello\\" there', {}, ['hello"', "there"]),
        ('hello"\\\\there"', {}, ["hello\\there"]),
        ('hello"\\there"', {}, ["hello\\there"]),
        ("hello'\\\\there'", {}, ["hello\\\\there"]),
        ("hello'\\there'", {}, ["hello\\there"]),
        ("hello'$there'", {}, ["hello$there"]),
        ('a "" b', {}, ["a", "b"]),
        ("80 $PORTS", {"PORTS": "81/udp  82"}, ["80", "81/udp", "82"]),
    ],
)
def test_split_words(word: str, env: dict[str, str], expected: list[str]) -> None:
    assert split_words(word, env) == expected


def test_split_words_unterminated_quote() -> None:
    with pytest.raises(DockerfileError):
        split_words('hello" there', {})


# -- ENV / LABEL / ARG -----------------------------------------------------------------------------


def test_key_values_see_the_env_before_the_line() -> None:
    # ENV abc=hello / ENV abc=bye def=$abc / ENV ghi=$abc: def is hello, ghi is bye (Docker docs)
    env = {"abc": "hello"}
    pairs = parse_key_values(["abc", "bye", "def", "$abc"], env)
    assert pairs == [("abc", "bye"), ("def", "hello")]
    env.update(pairs)
    assert parse_key_values(["ghi", "$abc"], env) == [("ghi", "bye")]


def test_key_values_quotes_and_escapes() -> None:
    args = ['"c d"', '"e f"', "x", "a\\ b", "q", "'$NOPE'", "e", '""']
    assert parse_key_values(args, {}, instruction="LABEL") == [
        ("c d", "e f"), ("x", "a b"), ("q", "$NOPE"), ("e", "")]


@pytest.mark.parametrize(("args", "message"), [
    ([], "ENV requires at least one argument"),
    (["a"], "too many arguments"),
    (["", "x"], "ENV names can not be blank"),
])
def test_key_value_errors(args: list[str], message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        parse_key_values(args, {})


def test_arg_values() -> None:
    assert parse_arg_values(["A", "B=2", 'C="x y"', "D=$B-${A:-none}"], {}) == [
        ("A", None), ("B", "2"), ("C", "x y"), ("D", "2-none")]
    assert parse_arg_values(["V=${V:-default}"], {"V": "given"}) == [("V", "given")]
    with pytest.raises(DockerfileError, match="ARG names can not be blank"):
        parse_arg_values(["=x"], {})
    with pytest.raises(DockerfileError, match="ARG requires at least one argument"):
        parse_arg_values([], {})


def test_which_instructions_expand() -> None:
    assert EXPANDED_ARGS == {"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL",
                             "USER", "VOLUME", "WORKDIR"}
    assert not {"RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD"} & EXPANDED_ARGS
    assert {"HTTP_PROXY", "https_proxy", "NO_PROXY", "ftp_proxy", "ALL_PROXY"} <= set(PROXY_ARGS)


# -- heredoc markers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("<<EOF", ("EOF", 0, False, True)),
        ("<<-EOF", ("EOF", 0, True, True)),
        ('<<"EOF"', ("EOF", 0, False, False)),
        ("<<'EOF'", ("EOF", 0, False, False)),
        ('<<-"E"OF', ("EOF", 0, True, False)),
        ("3<<EOF", ("EOF", 3, False, True)),
        ("<<file.txt", ("file.txt", 0, False, True)),
    ],
)
def test_heredoc_marker(word: str, expected: tuple[str, int, bool, bool]) -> None:
    marker = parse_heredoc_marker(word)
    assert marker is not None
    assert (marker.name, marker.fd, marker.chomp, marker.expand) == expected


@pytest.mark.parametrize("word", ["EOF", "<<", "a<<EOF", "<<EOF<<", "<<'a b'x y"])
def test_not_a_heredoc_marker(word: str) -> None:
    assert parse_heredoc_marker(word) is None


def test_heredoc_markers_in_a_shell_line() -> None:
    markers = heredoc_markers('RUN cat <<A <<-"B" > out 2>&1')
    assert [(m.name, m.chomp, m.expand) for m in markers] == [("A", False, True), ("B", True, False)]
    assert chomp_heredoc("\t\tx\n\ty\tz\n  w\n") == "x\ny\tz\n  w\n"
