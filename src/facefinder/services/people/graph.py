"""Grouping faces into people on plain arrays: no catalog, no index, so that the service and
benchmarks/people.py run the very same code.

The input is each face's k nearest neighbours (face ids and cosine scores, from the vector index),
never all pairs: the work grows with n x k, not n^2. Two rules, both at a strict threshold:

* **join**: a face joins an existing person when at least ``support`` of its neighbours at or above
  the threshold are that person's (``min(support, size)`` for a person of one face), and more of them
  than of any other person. Joins repeat until none is left to make, so a face can join through
  faces that joined before it, but never through one chance neighbour.
* **form**: the faces left are linked where each is among the other's k nearest (mutual k-NN) at or
  above the threshold, and grouped by ``components`` (connected components) or ``whispers`` (Chinese
  whispers). A group of at least ``min_size`` faces becomes a new person; the faces of smaller groups
  stay unassigned. benchmarks/people.py measured both methods on LFW (docs/people.md says which won).

Person ids here are whatever the caller uses; new people get negative ids (-1, -2, ...).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

METHODS = ("components", "whispers")


@dataclass
class Grouping:
    """What ``group`` decided: faces that joined a person (existing, or new: negative ids), and the new
    people's faces. Each assignment carries the score that made it (cosine to the nearest member)."""

    assigned: dict[int, tuple[int, float]] = field(default_factory=dict)  # face id -> (person id, score)
    new_people: dict[int, list[int]] = field(default_factory=dict)  # new person id (< 0) -> face ids

    def joined_existing(self) -> int:
        return sum(1 for person, _ in self.assigned.values() if person >= 0)


def neighbour_lists(
    face_ids: np.ndarray, nbr_ids: np.ndarray, nbr_scores: np.ndarray, threshold: float
) -> dict[int, list[tuple[int, float]]]:
    """face id -> its neighbours at or above ``threshold``, best first, itself left out; ``nbr_ids`` is
    (n, k) with -1 where there is none (ineligible neighbours are -1 too)."""
    lists: dict[int, list[tuple[int, float]]] = {}
    for face, ids, scores in zip(face_ids.tolist(), nbr_ids.tolist(), nbr_scores.tolist()):
        lists[face] = [(i, s) for i, s in zip(ids, scores) if i >= 0 and i != face and s >= threshold]
    return lists


def mutual_edges(neighbours: dict[int, list[tuple[int, float]]], among: set[int]) -> list[tuple[int, int, float]]:
    """(a, b, score) with a < b, both in ``among``, each in the other's list."""
    edges = []
    for a in among:
        for b, score in neighbours.get(a, ()):
            if a < b and b in among and any(n == a for n, _ in neighbours.get(b, ())):
                edges.append((a, b, score))
    return sorted(edges)


def components(nodes: list[int], edges: list[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components (union-find), each sorted, largest first."""
    parent = {node: node for node in nodes}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b, _ in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for node in nodes:
        groups[root(node)].append(node)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def whispers(nodes: list[int], edges: list[tuple[int, int, float]], rounds: int = 20, seed: int = 0) -> list[list[int]]:
    """Chinese whispers (Biemann 2006): every node takes the label its neighbours weigh most, in a
    seeded random order, until nothing changes; each group sorted, largest first."""
    adjacent: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for a, b, score in edges:
        adjacent[a].append((b, score))
        adjacent[b].append((a, score))
    label = {node: node for node in nodes}
    order = sorted(adjacent)
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        changed = 0
        for node in order:
            weights: dict[int, float] = defaultdict(float)
            for other, score in adjacent[node]:
                weights[label[other]] += score
            best = max(weights.items(), key=lambda item: (item[1], -item[0]))[0]
            if best != label[node]:
                label[node], changed = best, changed + 1
        if not changed:
            break
    groups: dict[int, list[int]] = defaultdict(list)
    for node in nodes:
        groups[label[node]].append(node)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def join(
    faces: list[int],
    neighbours: dict[int, list[tuple[int, float]]],
    member_of: dict[int, int],
    support: int,
) -> dict[int, tuple[int, float]]:
    """Faces (not yet members) that join a person by the join rule (module docstring), in rounds until
    none joins; ``member_of`` (face -> person) is not changed. Returns face -> (person, score)."""
    members = dict(member_of)
    sizes = Counter(members.values())
    joined: dict[int, tuple[int, float]] = {}
    waiting = [f for f in faces if f not in members]
    while waiting:
        found: dict[int, tuple[int, float]] = {}
        for face in waiting:
            votes: dict[int, list[float]] = defaultdict(list)
            for other, score in neighbours.get(face, ()):
                if other in members:
                    votes[members[other]].append(score)
            if not votes:
                continue
            ranked = sorted(votes.items(), key=lambda item: (-len(item[1]), -max(item[1]), item[0]))
            person, scores = ranked[0]
            rival = len(ranked[1][1]) if len(ranked) > 1 else 0
            if len(scores) >= min(support, sizes[person]) and len(scores) > rival:
                found[face] = (person, max(scores))
        if not found:
            break
        for face, (person, score) in found.items():
            members[face] = person
            sizes[person] += 1
        joined.update(found)
        waiting = [f for f in waiting if f not in found]
    return joined


def group(
    faces: list[int],
    neighbours: dict[int, list[tuple[int, float]]],
    member_of: dict[int, int],
    method: str = "components",
    support: int = 2,
    min_size: int = 2,
) -> Grouping:
    """Join ``faces`` to the people of ``member_of`` where they belong, form new people of the rest,
    then let what is still left join those (see the module docstring). ``neighbours`` must hold the
    lists of ``faces``; members' lists are not needed."""
    if method not in METHODS:
        raise ValueError(f"method: one of {', '.join(METHODS)}, not {method!r}")
    result = Grouping(assigned=join(faces, neighbours, member_of, support))
    rest = [f for f in faces if f not in result.assigned and f not in member_of]
    edges = mutual_edges(neighbours, set(rest))
    linked = sorted({node for a, b, _ in edges for node in (a, b)})
    groups = components(linked, edges) if method == "components" else whispers(linked, edges)
    best: dict[int, float] = defaultdict(float)
    for a, b, score in edges:
        best[a], best[b] = max(best[a], score), max(best[b], score)
    for group_faces in groups:
        if len(group_faces) < min_size:
            continue
        person = -(len(result.new_people) + 1)
        result.new_people[person] = group_faces
        for face in group_faces:
            result.assigned[face] = (person, round(best[face], 4))
    members = dict(member_of) | {f: p for f, (p, _) in result.assigned.items()}
    late = join([f for f in rest if f not in result.assigned], neighbours, members, support)
    for face, (person, score) in late.items():
        result.assigned[face] = (person, score)
        if person < 0:
            result.new_people[person].append(face)
    return result
