from c2fnas.search.stages import typical_candidates
from c2fnas.search.strategies import topology_clusters


def test_the_compute_estimate_counts_one_topology_of_each_cluster():
    candidates = typical_candidates(seed=3, clusters=4, width=0.5)
    cluster_of = topology_clusters(3, 4)
    assert sorted(cluster_of[candidate.levels] for candidate in candidates) == [0, 1, 2, 3]
    assert {candidate.width for candidate in candidates} == {0.5}
    assert typical_candidates(seed=3, clusters=4, width=0.5) == candidates  # seeded
