"""The flow task graph (`flows.dag`): hand-made graphs, hypothesis properties, and deep chains."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.dag import CycleError, Dag

# Derandomized and without an example database, so runs are repeatable and leave no files behind.
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)

Definition = tuple[list[str], dict[str, list[str]]]


def chain(length: int) -> Definition:
    names = [f"t{i}" for i in range(length)]
    return names, {name: [names[i - 1]] for i, name in enumerate(names) if i}


def children_of(tasks: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Downstream edges computed independently of `Dag`, for brute-force comparisons."""
    children: dict[str, set[str]] = {task: set() for task in tasks}
    for task in tasks:
        for parent in upstream.get(task, ()):
            children[parent].add(task)
    return children


def reachable(start: str, edges: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        for nxt in edges[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen


def assert_is_cycle(cycle: list[str], upstream: Mapping[str, Sequence[str]]) -> None:
    """Each task depends on the previous one, and the first depends on the last."""
    assert cycle
    assert len(set(cycle)) == len(cycle)
    for previous, task in itertools.pairwise(cycle):
        assert previous in upstream[task]
    assert cycle[-1] in upstream[cycle[0]]


def ready_waves(dag: Dag) -> list[list[str]]:
    """The waves of tasks that become ready when every ready task completes at once."""
    completed: set[str] = set()
    waves = []
    while wave := dag.ready(completed):
        waves.append(wave)
        completed.update(wave)
    return waves


@st.composite
def dag_definitions(draw: st.DrawFn, min_size: int = 0, max_size: int = 60) -> Definition:
    """Task i picks its parents among tasks < i; the definition order is then shuffled."""
    size = draw(st.integers(min_size, max_size))
    names = [f"t{i}" for i in range(size)]
    upstream: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        if i:
            parents = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True))
            upstream[name] = [names[p] for p in parents]
    return draw(st.permutations(names)), upstream


def subsets(items: Sequence[str]) -> st.SearchStrategy[set[str]]:
    return st.lists(st.booleans(), min_size=len(items), max_size=len(items)).map(
        lambda picks: {item for item, picked in zip(items, picks, strict=True) if picked}
    )


# --- hand-made graphs -------------------------------------------------------------------------


@pytest.fixture
def diamond() -> Dag:
    return Dag.build(["a", "b", "c", "d"], {"b": ["a"], "c": ["a"], "d": ["b", "c"]})


def test_chain_orders_tasks_along_their_dependencies() -> None:
    dag = Dag.build(["c", "b", "a"], {"b": ["a"], "c": ["b"]})

    assert dag.topological_order() == ["a", "b", "c"]


def test_chain_descendants_and_ancestors_are_everything_after_and_before() -> None:
    dag = Dag.build(["a", "b", "c", "d"], {"b": ["a"], "c": ["b"], "d": ["c"]})

    assert dag.descendants("b") == {"c", "d"}
    assert dag.ancestors("c") == {"a", "b"}
    assert dag.descendants("d") == set()
    assert dag.ancestors("a") == set()


def test_chain_is_ready_one_task_at_a_time() -> None:
    dag = Dag.build(["a", "b", "c"], {"b": ["a"], "c": ["b"]})

    assert dag.ready(set()) == ["a"]
    assert dag.ready({"a"}) == ["b"]
    assert dag.ready({"a", "b"}) == ["c"]
    assert dag.ready({"a", "b", "c"}) == []


def test_diamond_join_waits_for_both_branches(diamond: Dag) -> None:
    assert ready_waves(diamond) == [["a"], ["b", "c"], ["d"]]
    assert diamond.ready({"a", "b"}) == ["c"]


def test_diamond_descendants_and_ancestors(diamond: Dag) -> None:
    assert diamond.descendants("a") == {"b", "c", "d"}
    assert diamond.descendants("b") == {"d"}
    assert diamond.ancestors("d") == {"a", "b", "c"}
    assert diamond.ancestors("b") == {"a"}


def test_descendants_of_several_tasks_is_their_union_without_the_tasks_themselves(
    diamond: Dag,
) -> None:
    assert diamond.descendants("b", "c") == {"d"}
    assert diamond.descendants("a", "b") == {"c", "d"}
    assert diamond.ancestors("b", "d") == {"a", "c"}


def test_descendants_and_ancestors_of_no_tasks_are_empty(diamond: Dag) -> None:
    assert diamond.descendants() == set()
    assert diamond.ancestors() == set()


def test_diamond_exposes_upstream_downstream_and_position(diamond: Dag) -> None:
    assert diamond.tasks == ("a", "b", "c", "d")
    assert diamond.upstream == {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    assert diamond.downstream == {"a": ("b", "c"), "b": ("d",), "c": ("d",), "d": ()}
    assert diamond.position == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_fan_out_then_fan_in() -> None:
    workers = ["w1", "w2", "w3", "w4"]
    upstream = {worker: ["split"] for worker in workers} | {"merge": workers}
    dag = Dag.build(["split", *workers, "merge"], upstream)

    assert dag.topological_order() == ["split", *workers, "merge"]
    assert dag.ready({"split"}) == workers
    assert dag.ready({"split", "w1", "w2", "w3"}) == ["w4"]
    assert dag.ready({"split", *workers}) == ["merge"]
    assert dag.descendants("w2") == {"merge"}
    assert dag.ancestors("merge") == {"split", *workers}


def test_disconnected_components_do_not_reach_each_other() -> None:
    dag = Dag.build(["a1", "b1", "a2", "b2", "lonely"], {"a2": ["a1"], "b2": ["b1"]})

    assert dag.descendants("a1") == {"a2"}
    assert dag.ancestors("b2") == {"b1"}
    assert dag.descendants("lonely") == set()
    assert dag.ready(set()) == ["a1", "b1", "lonely"]
    assert dag.topological_order() == ["a1", "b1", "a2", "b2", "lonely"]


def test_started_tasks_are_not_ready_again(diamond: Dag) -> None:
    assert diamond.ready({"a"}, started={"b"}) == ["c"]
    assert diamond.ready(set(), started={"a"}) == []


def test_in_order_sorts_a_subset_by_topological_order_not_definition_order() -> None:
    dag = Dag.build(["c", "b", "a", "x"], {"b": ["a"], "c": ["b"]})

    assert dag.in_order(["c", "a"]) == ["a", "c"]
    assert dag.in_order({"x", "c", "b"}) == ["b", "c", "x"]
    assert dag.in_order([]) == []


def test_build_deduplicates_repeated_parents() -> None:
    dag = Dag.build(["a", "b"], {"b": ["a", "a"]})

    assert dag.upstream["b"] == ("a",)
    assert dag.downstream["a"] == ("b",)


def test_tasks_missing_from_upstream_have_no_parents() -> None:
    dag = Dag.build(["a", "b"], {})

    assert dag.upstream == {"a": (), "b": ()}
    assert dag.topological_order() == ["a", "b"]


def test_empty_definition_is_an_empty_dag() -> None:
    dag = Dag.build([], {})

    assert dag.topological_order() == []
    assert dag.ready(set()) == []
    assert dag.find_cycle() is None


def test_unknown_parent_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="ghost"):
        Dag.build(["a", "b"], {"b": ["a", "ghost"]})


# --- cycles -----------------------------------------------------------------------------------


def test_self_loop_is_a_cycle_of_one_task() -> None:
    with pytest.raises(CycleError) as caught:
        Dag.build(["a", "b"], {"a": ["a"], "b": ["a"]})

    assert caught.value.cycle == ["a"]
    assert str(caught.value) == "a → a"


def test_three_cycle_lists_tasks_so_each_depends_on_the_previous() -> None:
    upstream = {"b": ["a"], "c": ["b"], "a": ["c"]}

    with pytest.raises(CycleError) as caught:
        Dag.build(["a", "b", "c"], upstream)

    assert caught.value.cycle in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"])
    assert_is_cycle(caught.value.cycle, upstream)


def test_cycle_error_message_closes_the_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        Dag.build(["a", "b", "c"], {"b": ["a"], "c": ["b"], "a": ["c"]})

    cycle = caught.value.cycle
    assert str(caught.value) == " → ".join([*cycle, cycle[0]])


def test_cycle_excludes_tasks_that_only_lead_into_it() -> None:
    upstream = {"a": ["entry", "c"], "b": ["a"], "c": ["b"], "exit": ["c"]}

    with pytest.raises(CycleError) as caught:
        Dag.build(["entry", "a", "b", "c", "exit"], upstream)

    assert sorted(caught.value.cycle) == ["a", "b", "c"]
    assert_is_cycle(caught.value.cycle, upstream)


def test_cycle_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="x → y → x"):
        Dag.build(["x", "y"], {"x": ["y"], "y": ["x"]})


def test_find_cycle_on_an_unchecked_graph_returns_the_cycle() -> None:
    dag = Dag(("a", "b"), {"a": ("b",), "b": ("a",)})

    cycle = dag.find_cycle()

    assert cycle is not None
    assert_is_cycle(cycle, dag.upstream)


def test_find_cycle_of_a_dag_is_none(diamond: Dag) -> None:
    assert diamond.find_cycle() is None


# --- determinism ------------------------------------------------------------------------------


def test_same_definition_gives_the_same_order() -> None:
    tasks = ["load", "clean", "stats", "report", "notify"]
    upstream = {"clean": ["load"], "stats": ["clean"], "report": ["clean", "stats"]}

    orders = {tuple(Dag.build(tasks, upstream).topological_order()) for _ in range(5)}

    assert orders == {("load", "clean", "stats", "report", "notify")}


def test_upstream_mapping_order_does_not_change_the_order() -> None:
    tasks = ["a", "b", "c", "d"]
    forward = {"b": ["a"], "c": ["a"], "d": ["c", "b"]}
    backward = dict(reversed(forward.items()))

    assert Dag.build(tasks, forward).topological_order() == (
        Dag.build(tasks, backward).topological_order()
    )


def test_independent_tasks_keep_definition_order() -> None:
    assert Dag.build(["z", "y", "x"], {}).topological_order() == ["z", "y", "x"]


def test_swapping_siblings_in_the_definition_swaps_them_in_the_order() -> None:
    upstream = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}

    assert Dag.build(["a", "b", "c", "d"], upstream).topological_order() == ["a", "b", "c", "d"]
    assert Dag.build(["a", "c", "b", "d"], upstream).topological_order() == ["a", "c", "b", "d"]


def test_task_defined_first_goes_first_once_it_becomes_ready() -> None:
    dag = Dag.build(["late", "root", "early"], {"late": ["root"]})

    assert dag.topological_order() == ["root", "late", "early"]


# --- large graphs -----------------------------------------------------------------------------


def test_ten_thousand_task_chain_needs_no_recursion() -> None:
    tasks, upstream = chain(10_000)

    dag = Dag.build(tasks, upstream)

    assert dag.topological_order() == tasks
    assert dag.descendants(tasks[0]) == set(tasks[1:])
    assert dag.ancestors(tasks[-1]) == set(tasks[:-1])
    assert dag.ready(set(tasks[:-1])) == [tasks[-1]]
    assert dag.in_order(reversed(tasks)) == tasks


def test_ten_thousand_task_chain_defined_backwards_is_reordered() -> None:
    tasks, upstream = chain(10_000)

    dag = Dag.build(tasks[::-1], upstream)

    assert dag.topological_order() == tasks
    assert dag.find_cycle() is None


def test_ten_thousand_task_cycle_is_reported_whole() -> None:
    tasks, upstream = chain(10_000)
    upstream[tasks[0]] = [tasks[-1]]

    with pytest.raises(CycleError) as caught:
        Dag.build(tasks, upstream)

    assert len(caught.value.cycle) == 10_000
    assert_is_cycle(caught.value.cycle, upstream)


# --- properties on random DAGs ----------------------------------------------------------------


@PROPERTY
@given(dag_definitions())
def test_topological_order_is_a_permutation_with_parents_first(definition: Definition) -> None:
    tasks, upstream = definition
    order = Dag.build(tasks, upstream).topological_order()

    assert sorted(order) == sorted(tasks)
    rank = {task: i for i, task in enumerate(order)}
    for task in tasks:
        for parent in upstream.get(task, ()):
            assert rank[parent] < rank[task]


@PROPERTY
@given(dag_definitions())
def test_topological_order_prefers_the_task_defined_first_among_ready_ones(
    definition: Definition,
) -> None:
    tasks, upstream = definition
    dag = Dag.build(tasks, upstream)
    order = dag.topological_order()
    rank = {task: i for i, task in enumerate(order)}

    for task in tasks:
        became_ready = max((rank[parent] for parent in upstream.get(task, ())), default=-1)
        # Every task emitted while `task` was waiting ready must have been defined before it.
        for chosen in order[became_ready + 1 : rank[task]]:
            assert dag.position[chosen] < dag.position[task]


@PROPERTY
@given(dag_definitions())
def test_same_definition_always_gives_the_same_order(definition: Definition) -> None:
    tasks, upstream = definition

    assert Dag.build(tasks, upstream).topological_order() == (
        Dag.build(list(tasks), dict(upstream)).topological_order()
    )


@PROPERTY
@given(dag_definitions())
def test_descendants_equal_brute_force_reachability(definition: Definition) -> None:
    tasks, upstream = definition
    dag = Dag.build(tasks, upstream)
    children = children_of(tasks, upstream)

    for task in tasks:
        assert dag.descendants(task) == reachable(task, children)


@PROPERTY
@given(dag_definitions())
def test_downstream_mirrors_upstream(definition: Definition) -> None:
    tasks, upstream = definition
    dag = Dag.build(tasks, upstream)

    assert {task: set(kids) for task, kids in dag.downstream.items()} == children_of(
        tasks, upstream
    )


@PROPERTY
@given(dag_definitions())
def test_ancestors_and_descendants_are_mirror_images(definition: Definition) -> None:
    tasks, upstream = definition
    dag = Dag.build(tasks, upstream)
    descendants = {task: dag.descendants(task) for task in tasks}
    ancestors = {task: dag.ancestors(task) for task in tasks}

    for a in tasks:
        for b in tasks:
            assert (b in descendants[a]) == (a in ancestors[b])


@PROPERTY
@given(dag_definitions(min_size=1).flatmap(lambda d: st.tuples(st.just(d), subsets(d[0]))))
def test_descendants_of_several_tasks_is_the_union_of_each(
    drawn: tuple[Definition, set[str]],
) -> None:
    (tasks, upstream), chosen = drawn
    dag = Dag.build(tasks, upstream)

    union: set[str] = set().union(*(dag.descendants(task) for task in chosen))
    assert dag.descendants(*chosen) == union - chosen


@PROPERTY
@given(dag_definitions().flatmap(lambda d: st.tuples(st.just(d), subsets(d[0]), subsets(d[0]))))
def test_ready_is_every_waiting_task_whose_parents_all_completed(
    drawn: tuple[Definition, set[str], set[str]],
) -> None:
    (tasks, upstream), completed, started = drawn
    dag = Dag.build(tasks, upstream)

    expected = [
        task
        for task in tasks
        if task not in completed
        and task not in started
        and set(upstream.get(task, ())) <= completed
    ]
    assert dag.ready(completed, started) == expected


@PROPERTY
@given(dag_definitions().flatmap(lambda d: st.tuples(st.just(d), subsets(d[0]))))
def test_ready_without_started_ignores_nothing_but_completed(
    drawn: tuple[Definition, set[str]],
) -> None:
    (tasks, upstream), completed = drawn
    dag = Dag.build(tasks, upstream)

    ready = dag.ready(completed)

    for task in tasks:
        parents_done = set(upstream.get(task, ())) <= completed
        assert (task in ready) == (task not in completed and parents_done)


@PROPERTY
@given(dag_definitions())
def test_find_cycle_of_a_random_dag_is_none(definition: Definition) -> None:
    tasks, upstream = definition

    assert Dag.build(tasks, upstream).find_cycle() is None


@PROPERTY
@given(dag_definitions().flatmap(lambda d: st.tuples(st.just(d), subsets(d[0]))))
def test_in_order_follows_topological_order(drawn: tuple[Definition, set[str]]) -> None:
    (tasks, upstream), chosen = drawn
    dag = Dag.build(tasks, upstream)

    assert dag.in_order(chosen) == [task for task in dag.topological_order() if task in chosen]


@st.composite
def dags_with_a_back_edge(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], str, str]:
    """A random DAG where `ancestor` reaches `descendant`, plus the edge that closes a cycle."""
    tasks, upstream = draw(dag_definitions(min_size=2))
    # Guarantee at least one edge so there is a descendant to point back from.
    first, second = sorted(
        draw(st.lists(st.integers(0, len(tasks) - 1), min_size=2, max_size=2, unique=True))
    )
    upstream.setdefault(f"t{second}", [])
    if f"t{first}" not in upstream[f"t{second}"]:
        upstream[f"t{second}"].append(f"t{first}")
    dag = Dag.build(tasks, upstream)
    descendant = draw(st.sampled_from([task for task in tasks if dag.ancestors(task)]))
    ancestor = draw(st.sampled_from(sorted(dag.ancestors(descendant))))
    with_back_edge = {task: list(parents) for task, parents in upstream.items()}
    with_back_edge.setdefault(ancestor, []).append(descendant)
    return tasks, with_back_edge, ancestor, descendant


@PROPERTY
@given(dags_with_a_back_edge())
def test_back_edge_makes_build_report_a_real_cycle(
    drawn: tuple[list[str], dict[str, list[str]], str, str],
) -> None:
    tasks, upstream, ancestor, descendant = drawn

    with pytest.raises(CycleError) as caught:
        Dag.build(tasks, upstream)

    cycle = caught.value.cycle
    assert_is_cycle(cycle, upstream)
    # The graph was acyclic before, so every cycle runs through the new edge.
    assert ancestor in cycle
    assert descendant in cycle
