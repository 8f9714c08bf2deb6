"""Embedding-based batch rules: a diverse batch in a feature space, and the cold-start rules.

    rule            measures distances between                           paper
    badge           last-layer gradients at the predicted class           Ash et al. 2020
    coreset         penultimate features (candidates and labeled set)     Sener & Savarese 2018
    cluster_margin  penultimate features of the lowest-margin candidates  Citovsky et al. 2021
    typiclust       the inputs (labeled set and candidates)               Hacohen, Dekel & Weinshall 2022
    probcover       the inputs (labeled set and candidates)               Yehuda, Dekel, Hacohen & Weinshall 2022

The features and gradients are the fitted model's (the backend's `embed`, `gradient_embed`: its
deterministic network). TypiClust and ProbCover are meant for the first rounds, and their papers
measure distances in a representation learned without labels (SimCLR): a model fitted on a few
dozen labels is shaped by those labels and changes every round. alab has no self-supervised
encoder, so they measure the inputs themselves (flattened, scaled as the data set gives them):
label-free, the same every round, and no fitted model needed.

Every rule is a pure function of tensors; clustering and neighbour search are scikit-learn's, seeded
by an integer drawn from the round's generator, so a run's picks are a function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors, radius_neighbors_graph
from torch import Tensor

from alab.acquisition.base import Embedded, Selection
from alab.errors import AlabError


def _seed(generator: torch.Generator) -> int:
    """An integer seed for scikit-learn, drawn from the round's generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _numpy(x_N_D: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x_N_D.detach().cpu().numpy(), dtype=np.float32)


# --- Coreset -------------------------------------------------------------------------------------


def kcenter_greedy(candidates_N_D: Tensor, centers_L_D: Tensor, b: int, *, center_chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Greedy k-center: (indices_B, radii_B), each pick the candidate farthest from every center so far.

    d_n = min_{c in centers} ||x_n - c||; pick argmax_n d_n (ties: lowest position), add it to the
    centers, repeat b times. radii_B[i] is the covering radius max_n d_n before pick i. The greedy
    covering radius is at most twice the best any b picks achieve (Gonzalez 1985). Cost O((L + b) N D).
    Shapes: [N, D], [L, D] (L >= 1) -> [B], [B], B = min(b, N). Sener & Savarese (2018), "Active
    Learning for Convolutional Neural Networks: A Core-Set Approach".
    """
    N, L = candidates_N_D.shape[0], centers_L_D.shape[0]
    if L < 1:
        raise AlabError("coreset needs at least one labeled item: its centers start from the labeled set")
    distance_N = torch.full((N,), math.inf, dtype=candidates_N_D.dtype)
    for start in range(0, L, center_chunk):  # [N, chunk] distances at a time
        distance_N = torch.minimum(distance_N, torch.cdist(candidates_N_D, centers_L_D[start : start + center_chunk]).amin(dim=1))
    picked_N = torch.zeros(N, dtype=torch.bool)
    indices, radii = [], []
    for _ in range(min(b, N)):
        i = int(distance_N.masked_fill(picked_N, -math.inf).argmax())  # the first of equal maxima
        indices.append(i)
        radii.append(float(distance_N[i]))
        picked_N[i] = True
        distance_N = torch.minimum(distance_N, torch.cdist(candidates_N_D, candidates_N_D[i : i + 1])[:, 0])
    return torch.tensor(indices, dtype=torch.long), torch.tensor(radii, dtype=candidates_N_D.dtype)


@dataclass(frozen=True)
class Coreset:
    """Greedy k-center on the penultimate features, from the labeled set (`kcenter_greedy`)."""

    acquisition: None = None
    embedding: str = "features"
    labeled: bool = True
    classification: bool = False

    def candidates(self, b: int) -> int | None:
        return None

    def select_embedded(self, embedded: Embedded, b: int, *, generator: torch.Generator) -> Selection:
        indices_B, radii_B = kcenter_greedy(embedded.candidates_N_D, embedded.labeled_L_D, b)
        return Selection(indices=indices_B, scores=radii_B)

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        raise AlabError("coreset needs the candidates' embeddings: call select_embedded (the loop does)")


# --- BADGE ---------------------------------------------------------------------------------------


def kmeanspp_seeding(embeddings_N_E: Tensor, b: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """k-means++ seeding: (indices_B, squared_distances_B), without replacement.

    The first pick is the embedding of largest norm (BADGE's code, where k-means++ draws it
    uniformly); each next one is drawn with probability D(x)^2 / sum D^2, D(x) the distance to the
    nearest pick so far (Arthur & Vassilvitskii 2007). squared_distances_B[i] is the chosen item's
    D^2 (the first: its squared norm). When every remaining D is 0 (copies of the picks), the rest
    are uniform among the remaining items. Cost O(b N E). Shapes: [N, E] -> [B], [B], B = min(b, N).
    """
    N = embeddings_N_E.shape[0]
    B = min(b, N)
    if B == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    x_N_E = embeddings_N_E.float()
    norms2_N = x_N_E.square().sum(dim=1)
    first = int(norms2_N.argmax())
    indices, d2 = [first], [float(norms2_N[first])]
    picked_N = torch.zeros(N, dtype=torch.bool)
    picked_N[first] = True
    d2_N = torch.full((N,), math.inf, dtype=torch.float64)
    for _ in range(B - 1):
        center_E = x_N_E[indices[-1]]
        # ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c: one [N, E] @ [E] product, no [N, E] difference
        new_N = (norms2_N + norms2_N[indices[-1]] - 2 * (x_N_E @ center_E)).clamp(min=0).double()
        d2_N = torch.minimum(d2_N, new_N).masked_fill(picked_N, 0.0)
        weights_N = d2_N if float(d2_N.sum()) > 0 else (~picked_N).double()
        i = int(torch.multinomial(weights_N, 1, generator=generator))
        indices.append(i)
        d2.append(float(d2_N[i]))
        picked_N[i] = True
    return torch.tensor(indices, dtype=torch.long), torch.tensor(d2)


@dataclass(frozen=True)
class Badge:
    """BADGE: k-means++ seeding on the last layer's gradient embeddings (`kmeanspp_seeding`).

    A gradient's norm grows with the model's uncertainty ((p - e_y^) is small when it is confident) and
    the D^2 sampling spreads the batch. Ash, Zhang, Krishnamurthy, Langford & Agarwal (2020), "Deep Batch
    Active Learning by Diverse, Uncertain Gradient Lower Bounds".
    """

    acquisition: None = None
    embedding: str = "gradient"
    labeled: bool = False
    classification: bool = True

    def candidates(self, b: int) -> int | None:
        return None

    def select_embedded(self, embedded: Embedded, b: int, *, generator: torch.Generator) -> Selection:
        indices_B, d2_B = kmeanspp_seeding(embedded.candidates_N_D, b, generator)
        return Selection(indices=indices_B, scores=d2_B)

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        raise AlabError("badge needs the candidates' gradient embeddings: call select_embedded (the loop does)")


# --- Cluster-Margin ------------------------------------------------------------------------------


def cluster_round_robin(features_M_D: Tensor, b: int, generator: torch.Generator) -> Tensor:
    """b of M items, one at a time from clusters in turn: indices_B, B = min(b, M).

    Hierarchical agglomerative clustering with average linkage (Euclidean) into min(b, M) clusters;
    the clusters in order of size, smallest first (ties: the one holding the lowest position), each
    visited in turn and giving one of its items, in a random order drawn from `generator`.
    """
    M = features_M_D.shape[0]
    B = min(b, M)
    if B == 0:
        return torch.zeros(0, dtype=torch.long)
    labels_M = AgglomerativeClustering(n_clusters=B, linkage="average").fit_predict(_numpy(features_M_D)) if B > 1 else np.zeros(M, int)
    members = [np.flatnonzero(labels_M == c) for c in range(int(labels_M.max()) + 1)]
    members = sorted(members, key=lambda m: (len(m), int(m[0])))
    queues = [list(m[torch.randperm(len(m), generator=generator).numpy()]) for m in members]
    picked: list[int] = []
    while len(picked) < B:
        for queue in queues:
            if queue and len(picked) < B:
                picked.append(int(queue.pop(0)))
    return torch.tensor(picked, dtype=torch.long)


@dataclass(frozen=True)
class ClusterMargin:
    """Cluster-Margin: the lowest-margin candidates, clustered, one per cluster in turn (`cluster_round_robin`).

    The loop keeps the `per_pick` * b candidates of smallest margin of the posterior predictive,
    p(1) - p(2) (highest `margin` score), and their penultimate features. Citovsky, DeSalvo, Gentile,
    Karydas, Rajagopalan, Rostamizadeh & Kumar (2021), "Batch Active Learning at Scale". Where the
    paper clusters the whole pool once (HAC with a distance threshold, on the seed model's
    embeddings), this clusters the candidates each round, in the current model's features, into as
    many clusters as the batch: no state carried across rounds, O((per_pick * b)^2) instead of O(N^2).
    """

    acquisition: str = "margin"
    embedding: str = "features"
    labeled: bool = False
    classification: bool = True
    per_pick: int = 10

    def candidates(self, b: int) -> int | None:
        return self.per_pick * b

    def select_embedded(self, embedded: Embedded, b: int, *, generator: torch.Generator) -> Selection:
        assert embedded.scores_N is not None
        indices_B = cluster_round_robin(embedded.candidates_N_D, b, generator)
        return Selection(indices=indices_B, scores=embedded.scores_N[indices_B])

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        raise AlabError("cluster_margin needs the candidates' embeddings: call select_embedded (the loop does)")


# --- TypiClust -----------------------------------------------------------------------------------


def cluster_labels(x_N_D: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels [N]: scikit-learn's KMeans up to 50 clusters, MiniBatchKMeans (batches of 5,000) beyond, as TypiClust's code."""
    if k <= 50:
        return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x_N_D)
    return MiniBatchKMeans(n_clusters=k, batch_size=5000, n_init=1, random_state=seed).fit_predict(x_N_D)


def typicality(x_N_D: np.ndarray, neighbors: int) -> np.ndarray:
    """Typicality(x) = 1 / (mean distance to its `neighbors` nearest neighbours in x_N_D), [N] (1e-12 keeps it finite)."""
    distances_N_K, _ = NearestNeighbors(n_neighbors=neighbors + 1).fit(x_N_D).kneighbors(x_N_D)
    return 1.0 / (distances_N_K[:, 1:].mean(axis=1) + 1e-12)  # column 0: the item itself


def typiclust(
    candidates_N_D: Tensor, labeled_L_D: Tensor, b: int, generator: torch.Generator,
    *, neighbors: int = 20, min_cluster_size: int = 5, max_clusters: int = 500,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """TypiClust: the most typical candidate of the least covered large clusters, (indices_B, typicality_B).

    k-means on labeled and candidates together into min(L + b, 500) clusters; clusters of more than 5
    items, in order of fewest labeled members, then largest; each pick takes the next cluster in that
    order (cycling) and its unlabeled item of highest typicality, 1 / the mean distance to its
    min(20, n / 2) nearest neighbours among the cluster's n unlabeled, unpicked items (the paper's
    Euclidean distance; its code's faiss search averages squared distances). Hacohen, Dekel &
    Weinshall (2022), "Active Learning on a Budget: Opposite Strategies Suit High and Low Budgets";
    the constants are its code's (avihu111/TypiClust). Shapes: [N, D], [L, D] -> [B], [B].
    """
    N, L = candidates_N_D.shape[0], labeled_L_D.shape[0]
    B = min(b, N)
    x_P_D = _numpy(torch.cat([labeled_L_D, candidates_N_D]))  # labeled first, then the candidates
    k = min(L + B, max_clusters, L + N)
    labels_P = cluster_labels(x_P_D, k, _seed(generator))
    sizes_k = np.bincount(labels_P, minlength=k)
    labeled_k = np.bincount(labels_P[:L], minlength=k)
    clusters = [c for c in range(k) if sizes_k[c] > min_cluster_size] or list(range(k))
    clusters.sort(key=lambda c: (labeled_k[c], -sizes_k[c], c))
    candidate_labels_N = labels_P[L:].copy()
    indices, scores = [], []
    turn = 0
    while len(indices) < B:
        if not any((candidate_labels_N == c).any() for c in clusters):
            clusters = sorted(set(candidate_labels_N[candidate_labels_N >= 0].tolist()))  # the large ones are used up
        cluster = clusters[turn % len(clusters)]
        turn += 1
        members = np.flatnonzero(candidate_labels_N == cluster)
        if len(members) == 0:
            continue
        typical = typicality(x_P_D[L + members], min(neighbors, len(members) // 2)) if len(members) > 1 else np.ones(1)
        best = int(np.argmax(typical))  # the first of equal maxima
        indices.append(int(members[best]))
        scores.append(float(typical[best]))
        candidate_labels_N[members[best]] = -1  # picked: no longer a member
    return torch.tensor(indices, dtype=torch.long), torch.tensor(scores)


@dataclass(frozen=True)
class TypiClust:
    """TypiClust on the inputs (`typiclust`): for the first rounds, then another rule (`[[schedule]]`)."""

    acquisition: None = None
    embedding: str = "inputs"
    labeled: bool = True
    classification: bool = False

    def candidates(self, b: int) -> int | None:
        return None

    def select_embedded(self, embedded: Embedded, b: int, *, generator: torch.Generator) -> Selection:
        indices_B, typicality_B = typiclust(embedded.candidates_N_D, embedded.labeled_L_D, b, generator)
        return Selection(indices=indices_B, scores=typicality_B)

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        raise AlabError("typiclust needs the items' inputs: call select_embedded (the loop does)")


# --- ProbCover -----------------------------------------------------------------------------------


def purity_radius(x_P_D: np.ndarray, num_classes: int, purity: float, seed: int) -> float:
    """The largest ball radius delta at which a fraction `purity` of the balls B(x, delta) are pure.

    Pure: every item within delta of x (distance <= delta, as `radius_neighbors_graph` counts) shares
    x's k-means cluster (k = the number of classes, the paper's stand-in for labels). With d(x) the
    distance from x to the nearest item of another cluster, B(x, delta) is pure iff delta < d(x):
    delta is the float just below the (1 - purity) quantile of d. Cost: one nearest-neighbour search
    per cluster, O(P^2 D) in all.
    """
    labels_P = cluster_labels(x_P_D, min(num_classes, len(x_P_D)), seed)
    other_P = np.full(len(x_P_D), np.inf)
    for c in np.unique(labels_P):
        inside, outside = labels_P == c, labels_P != c
        if outside.any():
            other_P[inside] = NearestNeighbors(n_neighbors=1).fit(x_P_D[outside]).kneighbors(x_P_D[inside])[0][:, 0]
    finite = np.sort(other_P[np.isfinite(other_P)])
    if not len(finite):  # one cluster: every ball is pure
        return float(np.inf)
    return float(np.nextafter(finite[int(math.floor((1 - purity) * len(finite)))], 0.0))


def probcover(
    candidates_N_D: Tensor, labeled_L_D: Tensor, b: int, num_classes: int, generator: torch.Generator,
    *, purity: float = 0.95, delta: float | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """ProbCover: greedy maximum coverage by balls of radius delta, (indices_B, newly_covered_B).

    delta: given, or `purity_radius` (the largest with 95% of balls pure, the paper's choice); the items
    covered are those within delta of a labeled item or a pick; each pick is the candidate whose
    ball covers the most uncovered items (ties: lowest position), counted in newly_covered_B. Once
    everything is covered, the remaining picks are uniform among the remaining candidates (drawn
    from `generator`; score 0). Yehuda, Dekel, Hacohen & Weinshall (2022), "Active Learning Through a
    Covering Lens". Shapes: [N, D], [L, D] -> [B], [B].
    """
    N, L = candidates_N_D.shape[0], labeled_L_D.shape[0]
    B = min(b, N)
    x_P_D = _numpy(torch.cat([labeled_L_D, candidates_N_D]))
    delta = purity_radius(x_P_D, num_classes, purity, _seed(generator)) if delta is None else delta
    if math.isinf(delta):
        delta = float(np.linalg.norm(x_P_D.max(axis=0) - x_P_D.min(axis=0))) + 1.0  # one ball covers all
    graph_P_P = radius_neighbors_graph(x_P_D, delta, mode="connectivity", include_self=True).astype(np.int64).tocsr()  # sparse [P, P]
    covered_P = np.zeros(L + N, dtype=bool)
    if L:
        covered_P[graph_P_P[:L].indices] = True
    available_N = np.ones(N, dtype=bool)
    indices, scores = [], []
    for _ in range(B):
        degree_N = graph_P_P[L:] @ (~covered_P).astype(np.int64)  # uncovered items in each candidate's ball
        degree_N[~available_N] = -1
        if degree_N.max() > 0:
            i = int(np.argmax(degree_N))
        else:
            remaining = np.flatnonzero(available_N)
            i = int(remaining[int(torch.randint(len(remaining), (1,), generator=generator))])
        indices.append(i)
        scores.append(float(max(degree_N[i], 0)))
        available_N[i] = False
        covered_P[graph_P_P[L + i].indices] = True
    return torch.tensor(indices, dtype=torch.long), torch.tensor(scores)


@dataclass(frozen=True)
class ProbCover:
    """ProbCover on the inputs (`probcover`): for the first rounds, then another rule (`[[schedule]]`)."""

    acquisition: None = None
    embedding: str = "inputs"
    labeled: bool = True
    classification: bool = True  # the ball radius is set by k-means with k = the number of classes

    def candidates(self, b: int) -> int | None:
        return None

    def select_embedded(self, embedded: Embedded, b: int, *, generator: torch.Generator) -> Selection:
        indices_B, covered_B = probcover(embedded.candidates_N_D, embedded.labeled_L_D, b, embedded.num_classes, generator)
        return Selection(indices=indices_B, scores=covered_B)

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        raise AlabError("probcover needs the items' inputs: call select_embedded (the loop does)")
