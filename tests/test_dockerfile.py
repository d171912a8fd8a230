"""Dockerfile parsing: the model (stages, instructions, ARGs, heredocs, ONBUILD) and every error
pointing at path, line and instruction."""

from __future__ import annotations

import textwrap

import pytest
from pydock.dockerfile import (
    ArgDecl,
    Heredoc,
    Instruction,
    expand_instruction,
    parse,
    parse_duration,
    parse_trigger,
)
from pydock.errors import DockerfileError, PydockError


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


MULTI = dedent(
    """
    # syntax=docker/dockerfile:1
    ARG BASE=python:3.11-slim
    ARG VERSION
    FROM --platform=$BUILDPLATFORM ${BASE} AS Builder
    WORKDIR /src
    COPY --chown=app:app --chmod=644 requirements.txt ./
    RUN --mount=type=cache,target=/root/.cache \\
        pip install -r requirements.txt
    FROM scratch
    COPY --from=builder /src /app
    CMD ["python", "-m", "app"]
    """
)


def test_stages_and_global_args() -> None:
    df = parse(MULTI, path="ctx/Dockerfile")
    assert df.path == "ctx/Dockerfile" and df.syntax == "docker/dockerfile:1" and df.escape == "\\"
    assert df.global_args == (ArgDecl("BASE", "python:3.11-slim", 2), ArgDecl("VERSION", None, 3))
    first, second = df.stages
    assert (first.index, first.name, first.base, first.platform, first.line) == (
        0, "builder", "${BASE}", "$BUILDPLATFORM", 4)
    assert (second.index, second.name, second.base, second.platform, second.line) == (
        1, None, "scratch", None, 9)
    assert df.stage("BUILDER") is first and df.stage(1) is second
    with pytest.raises(KeyError):
        df.stage("nope")
    assert [i.cmd for i in first.instructions] == ["WORKDIR", "COPY", "RUN"]
    workdir, copy, run = first.instructions
    assert workdir == Instruction(cmd="WORKDIR", args=("/src",), line=5, end_line=5,
                                  original="WORKDIR /src")
    assert copy.args == ("requirements.txt", "./")
    assert copy.flags == (("chown", "app:app"), ("chmod", "644"))
    assert copy.flag("chown") == "app:app" and copy.flag("from") is None
    assert (run.line, run.end_line) == (7, 8)
    assert run.args == ("pip install -r requirements.txt",) and not run.json
    assert run.flag_values("mount") == ("type=cache,target=/root/.cache",)
    copy_from, cmd = second.instructions
    assert copy_from.flag("from") == "builder"
    assert cmd.json and cmd.args == ("python", "-m", "app")


def test_lower_case_instructions_comments_and_blank_lines() -> None:
    df = parse("# a comment\n\nfrom alpine as base\n  # indented comment\nrun echo \\\n"
               "  # a comment inside a continuation\n  hi\n")
    (stage,) = df.stages
    assert stage.name == "base"
    (run,) = stage.instructions
    assert run.cmd == "RUN" and run.args == ("echo   hi",) and (run.line, run.end_line) == (5, 7)


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir C:\\ `\n  /s\n"
               "COPY a`$b c\n")
    assert df.escape == "`" and df.directives["escape"] == "`"
    run, copy = df.stages[0].instructions
    assert run.args == ("dir C:\\   /s",)
    assert expand_instruction(copy, {"b": "B"}, escape=df.escape).args == ("a$b", "c")


def test_directives_only_at_the_top() -> None:
    assert parse("FROM a\n# escape=`\nRUN a`\n").escape == "\\"
    assert parse("\n# escape=`\nFROM a\n").escape == "\\"        # a blank line ends them
    assert parse("# unknown=1\n# escape=`\nFROM a\n").escape == "\\"
    assert parse("#   ESCAPE  =  `   \nFROM a\n").escape == "`"


def test_env_label_arg_forms() -> None:
    df = parse(dedent(
        """
        FROM a
        ENV A=1 B="two words" C=x\\ y
        ENV LEGACY some value
        LABEL "com.example.vendor"="ACME" version=1.0
        ARG X Y=2 Z="a b"
        """
    ))
    env, legacy, label, arg = df.stages[0].instructions
    assert env.args == ("A", "1", "B", '"two words"', "C", "x\\ y")
    assert env.key_values() == (("A", "1"), ("B", '"two words"'), ("C", "x\\ y"))
    assert legacy.key_values() == (("LEGACY", "some value"),)
    assert label.key_values() == (('"com.example.vendor"', '"ACME"'), ("version", "1.0"))
    assert arg.args == ("X", "Y=2", 'Z="a b"')
    assert expand_instruction(env, {}).args == ("A", "1", "B", "two words", "C", "x y")
    assert expand_instruction(label, {}).key_values() == (("com.example.vendor", "ACME"),
                                                         ("version", "1.0"))
    assert expand_instruction(arg, {"X": "ignored"}).args == ("X", "Y=2", "Z=a b")


def test_expand_instruction_by_kind() -> None:
    df = parse(dedent(
        """
        FROM a
        EXPOSE 80 $PORTS
        VOLUME ["$DATA", "/logs"]
        WORKDIR $HOME/app
        USER ${USER:-app}
        STOPSIGNAL $SIG
        COPY --from=$STAGE --chown=$U:$U ["$SRC", "/dst dir/"]
        ADD --checksum=$SUM https://example.com/$FILE /x
        RUN echo $HOME
        CMD echo $HOME
        HEALTHCHECK CMD curl $HOST
        ONBUILD COPY $A /b
        """
    ))
    env = {"PORTS": "81/udp 82", "DATA": "/data", "HOME": "/root", "SIG": "SIGINT",
           "STAGE": "builder", "U": "app", "SRC": "a b", "SUM": "sha256:00", "FILE": "f.tgz",
           "HOST": "h", "A": "a"}
    got = [expand_instruction(ins, env) for ins in df.stages[0].instructions]
    expose, volume, workdir, user, stopsignal, copy, add, run, cmd, health, onbuild = got
    assert expose.args == ("80", "81/udp", "82")
    assert volume.args == ("/data", "/logs")
    assert workdir.args == ("/root/app",) and user.args == ("app",)
    assert stopsignal.args == ("SIGINT",)
    assert copy.flags == (("from", "builder"), ("chown", "app:app")) and copy.args == (
        "a b", "/dst dir/")
    assert add.flag("checksum") == "sha256:00" and add.args == ("https://example.com/f.tgz", "/x")
    assert run.args == ("echo $HOME",) and cmd.args == ("echo $HOME",)
    assert health.args == ("CMD", "curl $HOST")
    assert onbuild.args == ("COPY $A /b",)  # expanded when the trigger runs, in the child


def test_env_on_one_line_sees_the_env_before_it() -> None:
    df = parse("FROM a\nENV abc=bye def=$abc\n")
    (env,) = df.stages[0].instructions
    assert expand_instruction(env, {"abc": "hello"}).key_values() == (("abc", "bye"),
                                                                      ("def", "hello"))


def test_expansion_error_is_located() -> None:
    df = parse("FROM a\nWORKDIR ${DIR:?set DIR}\n", path="app/Dockerfile")
    (workdir,) = df.stages[0].instructions
    with pytest.raises(DockerfileError) as exc:
        expand_instruction(workdir, {}, path="app/Dockerfile")
    error = exc.value
    assert (error.path, error.line, error.instruction) == ("app/Dockerfile", 2, "WORKDIR")
    assert str(error) == ('app/Dockerfile:2: WORKDIR: failed to process "${DIR:?set DIR}": '
                          "DIR: set DIR")


def test_heredocs() -> None:
    df = parse(dedent(
        """
        FROM a
        RUN <<EOF
        echo hi
        EOF
        RUN <<-"END" python3
        \tprint("$HOME")
        \tEND
        COPY <<one.txt <<two.txt /dst/
        1 $X
        one.txt
        2
        two.txt
        RUN 3<<EOF cat /dev/fd/3
        x
        EOF
        """
    ))
    plain, chomped, copy, fd = df.stages[0].instructions
    assert plain.args == ("<<EOF",) and plain.heredocs == (Heredoc("EOF", "echo hi\n"),)
    assert (plain.line, plain.end_line) == (2, 4)
    (doc,) = chomped.heredocs
    assert (doc.name, doc.chomp, doc.expand) == ("END", True, False)
    assert doc.content == '\tprint("$HOME")\n' and doc.data == 'print("$HOME")\n'
    assert [(d.name, d.content) for d in copy.heredocs] == [("one.txt", "1 $X\n"),
                                                            ("two.txt", "2\n")]
    assert copy.args == ("<<one.txt", "<<two.txt", "/dst/")
    expanded = expand_instruction(copy, {"X": "x"})
    assert expanded.args == copy.args and expanded.heredocs[0].content == "1 x\n"
    assert fd.heredocs[0].fd == 3 and fd.args == ("3<<EOF cat /dev/fd/3",)


def test_onbuild_trigger_is_parsed() -> None:
    df = parse(dedent(
        """
        FROM a
        ONBUILD COPY --from=builder --chown=1:1 . /app
        onbuild run ["make"]
        ONBUILD RUN <<EOF
        make install
        EOF
        """
    ))
    copy, run, heredoc = df.stages[0].instructions
    assert copy.cmd == "ONBUILD" and copy.args == ("COPY --from=builder --chown=1:1 . /app",)
    assert copy.trigger is not None
    assert copy.trigger.cmd == "COPY" and copy.trigger.flags == (("from", "builder"),
                                                                 ("chown", "1:1"))
    assert run.args == ('run ["make"]',) and run.trigger is not None
    assert run.trigger.json and run.trigger.args == ("make",)
    assert heredoc.args == ("RUN <<EOF\nmake install\nEOF",)
    assert heredoc.trigger is not None and heredoc.trigger.heredocs[0].content == "make install\n"
    assert (heredoc.line, heredoc.end_line) == (4, 6)


def test_bad_onbuild_trigger_fails_in_the_child_build_only() -> None:
    df = parse("FROM a\nONBUILD FOO x\nONBUILD COPY --bad=1 a b\nONBUILD WORKDIR ${X\n")
    assert [(i.args, i.trigger) for i in df.stages[0].instructions] == [
        (("FOO x",), None), (("COPY --bad=1 a b",), None), (("WORKDIR ${X",), None)]
    for expression, instruction, message in [
        ("FOO x", "ONBUILD FOO", "unknown instruction"),
        ("COPY --bad=1 a b", "ONBUILD COPY", "unknown flag: --bad"),
        ("WORKDIR ${X", "ONBUILD WORKDIR", "missing '}'"),
        ("FROM x", "ONBUILD FROM", "isn't allowed as an ONBUILD trigger"),
    ]:
        with pytest.raises(DockerfileError) as exc:
            parse_trigger(expression, path="child/Dockerfile", line=3)
        error = exc.value
        assert (error.path, error.line, error.instruction) == ("child/Dockerfile", 3, instruction)
        assert message in error.reason
    trigger = parse_trigger("RUN <<EOF\nmake\nEOF", line=7)
    assert (trigger.cmd, trigger.line, trigger.end_line) == ("RUN", 7, 9)
    assert trigger.heredocs == (Heredoc("EOF", "make\n"),)


def test_healthcheck_and_shell_forms() -> None:
    df = parse(dedent(
        """
        FROM a
        HEALTHCHECK --interval=5s --timeout=1m30s --start-period=0 --retries=3 CMD curl -f x
        HEALTHCHECK NONE
        HEALTHCHECK CMD ["wget", "-q", "x"]
        SHELL ["/bin/bash", "-o", "pipefail", "-c"]
        CMD []
        """
    ))
    health, none, exec_form, shell, cmd = df.stages[0].instructions
    assert health.args == ("CMD", "curl -f x") and health.flag("retries") == "3"
    assert none.args == ("NONE",)
    assert exec_form.json and exec_form.args == ("CMD", "wget", "-q", "x")
    assert shell.args == ("/bin/bash", "-o", "pipefail", "-c")
    assert cmd.json and cmd.args == ()


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("1ns", 1), ("1.5s", 1_500_000_000), ("1m30s", 90_000_000_000),
    ("300ms", 300_000_000), (".5h", 1_800_000_000_000), ("1h2m3s4ms5us6ns", 3_723_004_005_006),
    ("2µs", 2000), ("-1s", -1_000_000_000), ("+1s", 1_000_000_000),
])
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1.s2", "1 s", "-", "1d"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_copy_from_a_later_stage_index_is_an_error_but_a_name_is_not_checked() -> None:
    parse("FROM a AS one\nFROM b\nCOPY --from=0 x y\nCOPY --from=alpine:3 x y\n")
    with pytest.raises(DockerfileError, match="refers to current or future build stage"):
        parse("FROM a\nCOPY --from=0 x y\n")


# -- errors --------------------------------------------------------------------------------------


ERRORS = [
    # (Dockerfile, line, instruction, message)
    ("FROM a\nFOO bar\n", 2, "FOO", "unknown instruction"),
    ("FROM a\nRUNN x\n", 2, "RUNN", "unknown instruction (did you mean RUN?)"),
    ("RUN echo\nFROM a\n", 1, "RUN", "no build stage in current context"),
    ("ARG A\nENV B=1\nFROM a\n", 2, "ENV", "no build stage in current context"),
    ("ARG A=1\n", 1, None, "the Dockerfile has no FROM"),
    ("FROM a\nENV A\n", 2, "ENV", "ENV must have two arguments"),
    ("FROM a\n\nENV A=1 \\\n  B\n", 3, "ENV", "can't find = in \"B\""),
    ("FROM a\nENV\n", 2, "ENV", "ENV requires at least one argument"),
    ("FROM a\nENV =x\n", 2, "ENV", "ENV names can not be blank"),
    ("FROM a\nLABEL a\n", 2, "LABEL", "LABEL must have two arguments"),
    ("FROM a\nARG\n", 2, "ARG", "ARG requires at least one argument"),
    ("FROM a\nARG =x\n", 2, "ARG", "ARG names can not be blank"),
    ("FROM a\nENV A=\"unterminated\n", 2, "ENV",
     "unexpected end of statement while looking for matching double-quote"),
    ("FROM a\nARG B=${A\n", 2, "ARG", "missing '}'"),
    ("FROM a\nWORKDIR ${A:=x}\n", 2, "WORKDIR", "unsupported modifier (:=)"),
    ("FROM a\nVOLUME /a \"/b c\"\n", 2, "VOLUME", "matching double-quote"),
    ("FROM a\nCOPY onlyone\n", 2, "COPY", "COPY requires at least two arguments"),
    ("FROM a\nCOPY x <<EOF\ny\nEOF\n", 2, "COPY", "cannot accept a heredoc as a destination"),
    ("FROM a\nCOPY --form=x a b\n", 2, "COPY", "unknown flag: --form"),
    ("FROM a\nCOPY --from a b\n", 2, "COPY", "missing a value on flag: --from"),
    ("FROM a\nCOPY --from=x --from=y a b\n", 2, "COPY", "duplicate flag specified: --from"),
    ("FROM a\nCOPY --link=maybe a b\n", 2, "COPY", "expecting boolean value for flag --link"),
    ("FROM a\nENV --x=1 A=b\n", 2, "ENV", "unknown flag: --x"),
    ("FROM a\nRUN --mount=type=bind,target=/x --mount=type=tmpfs,target=/y --net=none x\n", 2,
     "RUN", "unknown flag: --net"),
    ("FROM a b c d\n", 1, "FROM", "FROM requires either one or three arguments"),
    ("FROM a TO b\n", 1, "FROM", "FROM requires either one or three arguments"),
    ("FROM a AS 1st\n", 1, "FROM", "invalid name for build stage: '1st'"),
    ("FROM a AS x\nFROM b AS X\n", 2, "FROM", "duplicate stage name 'x' (first used on line 1)"),
    ("FROM ${BASE\n", 1, "FROM", "missing '}'"),
    ("FROM a\nSHELL /bin/sh -c\n", 2, "SHELL", "SHELL requires the arguments to be in JSON form"),
    ("FROM a\nWORKDIR\n", 2, "WORKDIR", "WORKDIR requires exactly one argument"),
    ("FROM a\nUSER\n", 2, "USER", "USER requires exactly one argument"),
    ("FROM a\nSTOPSIGNAL\n", 2, "STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
    ("FROM a\nEXPOSE\n", 2, "EXPOSE", "EXPOSE requires at least one argument"),
    ("FROM a\nVOLUME\n", 2, "VOLUME", "VOLUME requires at least one argument"),
    ("FROM a\nVOLUME [\"\"]\n", 2, "VOLUME", "VOLUME specified can not be an empty string"),
    ("FROM a\nHEALTHCHECK\n", 2, "HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
    ("FROM a\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK", "HEALTHCHECK NONE takes no arguments"),
    ("FROM a\nHEALTHCHECK RUN x\n", 2, "HEALTHCHECK", 'Unknown type "RUN" in HEALTHCHECK'),
    ("FROM a\nHEALTHCHECK CMD\n", 2, "HEALTHCHECK", "Missing command after HEALTHCHECK CMD"),
    ("FROM a\nHEALTHCHECK --interval=1us CMD x\n", 2, "HEALTHCHECK", "cannot be less than 1ms"),
    ("FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, "HEALTHCHECK", "missing unit in duration"),
    ("FROM a\nHEALTHCHECK --retries=0 CMD x\n", 2, "HEALTHCHECK", "--retries must be at least 1"),
    ("FROM a\nHEALTHCHECK --retries=x CMD y\n", 2, "HEALTHCHECK", "must be a whole number"),
    ("FROM a\nHEALTHCHECK --timeout=1s --timeout=2s CMD y\n", 2, "HEALTHCHECK", "duplicate flag"),
    ("FROM a\nONBUILD\n", 2, "ONBUILD", "ONBUILD requires at least one argument"),
    ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD", "Chaining ONBUILD via `ONBUILD ONBUILD`"),
    ("FROM a\nONBUILD FROM b\n", 2, "ONBUILD", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD MAINTAINER me\n", 2, "ONBUILD", "MAINTAINER isn't allowed as an ONBUILD"),
    ("FROM a\nRUN <<EOF\nnever ends\n", 2, "RUN", "unterminated heredoc"),
    ("# escape=x\nFROM a\n", 1, None, "invalid escape token 'x' does not match ` or \\"),
    ("# escape=`\n# escape=\\\nFROM a\n", 2, None, "only one escape parser directive"),
]


@pytest.mark.parametrize(("text", "line", "instruction", "message"), ERRORS,
                         ids=[e[3][:40] for e in ERRORS])
def test_errors_name_path_line_instruction(text: str, line: int, instruction: str | None,
                                           message: str) -> None:
    with pytest.raises(DockerfileError) as exc:
        parse(text, path="svc/Dockerfile")
    error = exc.value
    assert (error.path, error.line, error.instruction) == ("svc/Dockerfile", line, instruction)
    head = f"svc/Dockerfile:{line}: " + (f"{instruction}: " if instruction else "")
    assert str(error).startswith(head), str(error)
    assert message in error.reason
    assert isinstance(error, PydockError)


def test_empty_dockerfile() -> None:
    for text in ("", "\n\n", "# only a comment\n"):
        with pytest.raises(DockerfileError) as exc:
            parse(text)
        assert str(exc.value) == ("Dockerfile: the Dockerfile has no instructions "
                                  "(it needs at least a FROM)")


def test_caret_under_the_bad_part() -> None:
    with pytest.raises(DockerfileError) as exc:
        parse("FROM alpine\nCOPY --form=builder /a /b\n")
    assert str(exc.value) == (
        "Dockerfile:2: COPY: unknown flag: --form (accepted: --from, --chown, --chmod, --link, "
        "--parents, --exclude)\n"
        "    COPY --form=builder /a /b\n"
        "         ~~~~~~~~~~~~~^"
    )


def test_plain_dockerfile_error_still_works() -> None:
    error = DockerfileError("invalid --change 'X': nope")
    assert str(error) == "invalid --change 'X': nope" and error.reason == str(error)
    assert error.path is None and error.line is None and error.instruction is None
