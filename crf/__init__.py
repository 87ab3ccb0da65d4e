"""The fully connected CRF of Kraehenbuehl & Koltun (NIPS 2011) on a permutohedral lattice."""
