"""``localllm completion bash|zsh|fish``: a shell completion script generated from the argument parser.

The script is written from :func:`localllm.cli.build_parser` each time it is asked for, so a new
command or option completes without editing it. Installed model names come from the hidden
``localllm completion --models``, which reads the store's manifest and never loads llama.cpp.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")
MODEL_DESTS = ("model",)  # an argument with this dest names a model: complete installed names
FILE_DESTS = ("path", "input", "output")  # one with these names a file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", nargs="?", choices=SHELLS, help="the shell to write the script for")
    parser.add_argument("--models", action="store_true", help=argparse.SUPPRESS)  # for the scripts themselves


def run(args: argparse.Namespace) -> int:
    if args.models:
        print("\n".join(model_names()))
        return 0
    if args.shell is None:
        from localllm.errors import UsageError

        raise UsageError("which shell?", hint="localllm completion bash|zsh|fish")
    from . import build_parser

    print(WRITERS[args.shell](describe(build_parser())), end="")
    return 0


def model_names() -> list[str]:
    """Installed model names (``name:QUANT`` too when a name has several), only ones safe to print."""
    from localllm import app

    return app.library.completion_names()


# --- what the parser holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """What an option's value or a positional is: "model", "file", "choice" (of ``choices``) or "any"."""

    kind: str
    choices: tuple[str, ...] = ()
    name: str = "value"
    optional: bool = False  # a positional that may be left out


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    value: Value | None  # None: a flag that takes no value


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Value, ...]
    repeats: bool  # the last positional takes any number of words


def _value(action: argparse.Action) -> Value:
    name = action.dest if action.metavar is None else str(action.metavar)
    optional = not action.option_strings and action.nargs in ("?", "*")
    if action.choices is not None:
        return Value("choice", tuple(str(c) for c in action.choices), name, optional)
    kind = "model" if action.dest in MODEL_DESTS else "file" if action.dest in FILE_DESTS else "any"
    return Value(kind, name=name, optional=optional)


def _options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    return tuple(
        Option(tuple(a.option_strings), a.help or "", _value(a) if a.nargs != 0 else None)
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS
    )


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def describe(parser: argparse.ArgumentParser) -> tuple[tuple[Option, ...], tuple[Command, ...]]:
    """The top-level options, and every command with its options and positionals."""
    sub = _subparsers(parser)
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    commands = []
    for name, command in sub.choices.items():
        positionals = [a for a in command._actions if not a.option_strings and a.help != argparse.SUPPRESS]
        repeats = bool(positionals) and positionals[-1].nargs in ("*", "+")
        commands.append(Command(name, helps.get(name, ""), _options(command), tuple(map(_value, positionals)), repeats))
    return _options(parser), tuple(commands)


Spec = tuple[tuple[Option, ...], tuple[Command, ...]]


# --- bash ----------------------------------------------------------------------------------------


def _bash_kind(value: Value) -> str:
    return "choice " + " ".join(value.choices) if value.kind == "choice" else value.kind


def bash(spec: Spec) -> str:
    top, commands = spec
    value_cases = [
        f'        "{prefix} {flag}") echo "{_bash_kind(o.value)}" ;;'
        for prefix, options in [("", top)] + [(c.name, c.options) for c in commands]
        for o in options
        if o.value is not None
        for flag in o.flags
    ]
    option_cases = [f'        "") echo "{" ".join(f for o in top for f in o.flags)}" ;;'] + [
        f'        {c.name}) echo "{" ".join(f for o in c.options for f in o.flags)}" ;;' for c in commands
    ]
    positional_cases = []
    for c in commands:
        positional_cases += [f'        "{c.name} {i}") echo "{_bash_kind(v)}" ;;' for i, v in enumerate(c.positionals)]
        if c.repeats:
            positional_cases.append(f'        "{c.name} "*) echo "{_bash_kind(c.positionals[-1])}" ;;')
    names = " ".join(c.name for c in commands)
    return _BASH.format(
        value_cases="\n".join(value_cases),
        option_cases="\n".join(option_cases),
        positional_cases="\n".join(positional_cases),
        commands=names,
    )


_BASH = r"""# bash completion for localllm, written by `localllm completion bash` from its argument parser.
# Enable it with: source <(localllm completion bash)

_localllm_value_kind() {{  # $1 command ("" before one), $2 option: the kind of value it takes, if any
    case "$1 $2" in
{value_cases}
    esac
}}

_localllm_options() {{  # $1 command ("" before one)
    case "$1" in
{option_cases}
    esac
}}

_localllm_positional_kind() {{  # $1 command, $2 index of the positional argument
    case "$1 $2" in
{positional_cases}
    esac
}}

_localllm_complete_kind() {{  # $1 kind, $2 the word so far; $3 the localllm being completed
    local IFS=$'\n'
    case "$1" in
        model)
            COMPREPLY=($(compgen -W "$("$3" completion --models 2>/dev/null)" -- "$2"))
            if [[ $2 == */* || $2 == .* || $2 == "~"* ]]; then
                COMPREPLY+=($(compgen -f -- "$2"))
                compopt -o filenames 2>/dev/null
            fi ;;
        file)
            COMPREPLY=($(compgen -f -- "$2"))
            compopt -o filenames 2>/dev/null ;;
        "choice "*)
            IFS=' '
            COMPREPLY=($(compgen -W "${{1#choice }}" -- "$2")) ;;
    esac
}}

_localllm() {{
    # Words from the line itself, split at blanks only: bash's own COMP_WORDS also split at ':' and
    # '=' (COMP_WORDBREAKS), which would cut name:QUANT in two. (No bash 4 features: macOS ships bash 3.2.)
    local line="${{COMP_LINE:0:COMP_POINT}}" cur cmd="" expect="" npos=0 i=1 last word
    local -a words
    read -ra words <<< "$line"
    [[ -z $line || $line == *[[:blank:]] ]] && words+=("")
    last=$((${{#words[@]}} - 1))
    cur="${{words[last]}}"
    COMPREPLY=()
    while (( i < last )); do
        word="${{words[i]}}"
        if [[ -n $expect ]]; then
            expect=""
        elif [[ $word == -* ]]; then
            [[ $word != *=* ]] && expect="$(_localllm_value_kind "$cmd" "$word")"
        elif [[ -z $cmd ]]; then
            cmd="$word"
        else
            npos=$((npos + 1))
        fi
        i=$((i + 1))
    done
    if [[ -n $expect ]]; then
        _localllm_complete_kind "$expect" "$cur" "${{words[0]}}"
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_localllm_options "$cmd")" -- "$cur"))
    elif [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "{commands}" -- "$cur"))
    else
        _localllm_complete_kind "$(_localllm_positional_kind "$cmd" "$npos")" "$cur" "${{words[0]}}"
    fi
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then  # bash replaces only what follows the ':'
        local before="${{cur%"${{cur##*:}}"}}" n
        for n in "${{!COMPREPLY[@]}}"; do
            COMPREPLY[n]="${{COMPREPLY[n]#"$before"}}"
        done
    fi
}}

complete -F _localllm localllm
"""


# --- zsh -----------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_help(text: str) -> str:
    for char in "\\[]:":
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())


def _zsh_action(value: Value) -> str:
    if value.kind == "model":
        return "_localllm_models"
    if value.kind == "file":
        return "_files"
    if value.kind == "choice":
        return "(" + " ".join(value.choices) + ")"
    return " "


def _zsh_option(option: Option) -> str:
    spec = f"[{_zsh_help(option.help)}]"
    if option.value is not None:
        spec += f":{_zsh_help(option.value.name)}:{_zsh_action(option.value)}"
    if len(option.flags) == 1:
        return _zsh_quote(option.flags[0] + spec)
    exclusive = "(" + " ".join(option.flags) + ")"
    return _zsh_quote(exclusive) + "{" + ",".join(option.flags) + "}" + _zsh_quote(spec)


def _zsh_positional(value: Value, repeats: bool) -> str:
    lead = "*:" if repeats else ("::" if value.optional else ":")
    return _zsh_quote(f"{lead}{_zsh_help(value.name)}:{_zsh_action(value)}")


def _zsh_command(command: Command) -> str:
    specs = [_zsh_option(o) for o in command.options]
    for i, value in enumerate(command.positionals):
        last = i == len(command.positionals) - 1
        specs.append(_zsh_positional(value, repeats=last and command.repeats))
    body = " \\\n                ".join(specs)
    return f"            {command.name})\n                _arguments -s {body} ;;"


def zsh(spec: Spec) -> str:
    top, commands = spec
    described = "\n".join(f"        {_zsh_quote(c.name + ':' + _zsh_help(c.help))}" for c in commands)
    top_specs = " \\\n        ".join(_zsh_option(o) for o in top)
    cases = "\n".join(_zsh_command(c) for c in commands)
    return _ZSH.format(described=described, top_specs=top_specs, cases=cases)


_ZSH = r"""#compdef localllm
# zsh completion for localllm, written by `localllm completion zsh` from its argument parser.
# Enable it with: source <(localllm completion zsh)   (after compinit), or save it as _localllm in $fpath.

_localllm_models() {{
    local -a models
    models=(${{(f)"$(_call_program models ${{_localllm_program:-localllm}} completion --models 2>/dev/null)"}})
    _describe -t models 'installed model' models
    _files -g '*.gguf'
}}

_localllm_commands() {{
    local -a commands
    commands=(
{described}
    )
    _describe -t commands 'localllm command' commands
}}

_localllm() {{
    local curcontext="$curcontext" state line
    typeset -A opt_args
    typeset -g _localllm_program=$words[1]  # the localllm being completed, for its model names
    _arguments -C \
        {top_specs} \
        '1: :_localllm_commands' \
        '*:: :->command'
    case $state in
        command)
            curcontext="${{curcontext%:*:*}}:localllm-$words[1]:"
            case $words[1] in
{cases}
            esac ;;
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _localllm "$@"
else
    compdef _localllm localllm
fi
"""


# --- fish ----------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_value(value: Value) -> str:
    if value.kind == "model":
        return " -r -f -a '(__localllm_models)'"
    if value.kind == "file":
        return " -r -F"
    if value.kind == "choice":
        return " -r -f -a " + _fish_quote(" ".join(value.choices))
    return " -r -f"


def _fish_option(option: Option, condition: str) -> str:
    flags = "".join(f" -s {f[1:]}" if not f.startswith("--") else f" -l {f[2:]}" for f in option.flags)
    value = _fish_value(option.value) if option.value is not None else ""
    return f"complete -c localllm -n {_fish_quote(condition)}{flags}{value} -d {_fish_quote(option.help)}"


def _fish_command(command: Command) -> list[str]:
    condition = f"__fish_seen_subcommand_from {command.name}"
    lines = [_fish_option(o, condition) for o in command.options]
    if command.positionals:  # fish cannot tell the first positional from the second: the first decides
        first = command.positionals[0]
        if first.kind != "any":
            lines.append(f"complete -c localllm -n {_fish_quote(condition)}{_fish_value(first)}")
    return lines


def fish(spec: Spec) -> str:
    top, commands = spec
    lines = [_fish_option(o, "__fish_use_subcommand") for o in top]
    lines += [
        f"complete -c localllm -n __fish_use_subcommand -f -a {c.name} -d {_fish_quote(c.help)}" for c in commands
    ]
    for command in commands:
        lines += _fish_command(command)
    return _FISH.format(lines="\n".join(lines))


_FISH = r"""# fish completion for localllm, written by `localllm completion fish` from its argument parser.
# Enable it with: localllm completion fish > ~/.config/fish/completions/localllm.fish

function __localllm_models
    set -l tokens (commandline -opc)
    $tokens[1] completion --models 2>/dev/null
end

complete -c localllm -f
{lines}
"""

WRITERS = {"bash": bash, "zsh": zsh, "fish": fish}
