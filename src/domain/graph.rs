//! The stable repository as a dependency graph (SPEC section 5), petgraph
//! behind domain queries in the manner of guppy.
//!
//! Every version's requirements live in the [`Universe`] that resolution
//! reads. The graph holds the relation every other question is about:
//! "D depends on P" when the *latest* stable version of D requires P. Its
//! nodes are packages, so walking dependents costs what a breadth-first
//! search over an adjacency array costs; it is updated in place when a
//! version is promoted and when a package is removed, never rebuilt per
//! request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::NodeIndexable;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use super::name::PackageName;
use super::resolve::{Release, Resolution, ResolveError, Universe};

/// Why a package is obsolete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obsolescence {
    pub reason: String,
    pub replacement: Option<PackageName>,
}

/// A max-version pin a dependent would get: its requirement AND `<= max`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPin {
    pub dependent: PackageName,
    /// The dependent's latest version, whose requirement is pinned.
    pub version: Version,
    pub requirement: VersionReq,
    pub max: Version,
    /// Whether the dependent is itself obsolete (its maintainers get no email).
    pub dependent_obsolete: bool,
}

/// The stable repository: releases, the dependents graph, obsolescence.
#[derive(Clone, Debug, Default)]
pub struct StableRepo {
    universe: Universe,
    graph: StableDiGraph<PackageName, ()>,
    nodes: HashMap<PackageName, NodeIndex>,
    obsolete: HashMap<PackageName, Obsolescence>,
    /// The dependents relation frozen into a compact adjacency array for
    /// walks, rebuilt on first use after a change. petgraph stays the
    /// structure that changes; walks over its linked edge lists cost 3-6x a
    /// flat array on large graphs.
    frozen: std::sync::OnceLock<Frozen>,
}

/// Incoming edges as offsets into one array (CSR), by node index.
#[derive(Clone, Debug, Default)]
struct Frozen {
    offsets: Vec<u32>,
    sources: Vec<u32>,
}

impl Frozen {
    fn of(graph: &StableDiGraph<PackageName, ()>) -> Self {
        let bound = graph.node_bound();
        let mut offsets = vec![0u32; bound + 1];
        for e in graph.edge_indices() {
            if let Some((_, to)) = graph.edge_endpoints(e) {
                offsets[to.index() + 1] += 1;
            }
        }
        for i in 0..bound {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut sources = vec![0u32; offsets[bound] as usize];
        for e in graph.edge_indices() {
            if let Some((from, to)) = graph.edge_endpoints(e) {
                sources[fill[to.index()] as usize] = from.index() as u32;
                fill[to.index()] += 1;
            }
        }
        Self { offsets, sources }
    }

    fn incoming(&self, ix: usize) -> &[u32] {
        &self.sources[self.offsets[ix] as usize..self.offsets[ix + 1] as usize]
    }
}

impl StableRepo {
    pub fn new() -> Self {
        Self::default()
    }

    /// The releases and pins resolution works over.
    pub fn universe(&self) -> &Universe {
        &self.universe
    }

    fn node(&mut self, name: &PackageName) -> NodeIndex {
        if let Some(&ix) = self.nodes.get(name) {
            return ix;
        }
        let ix = self.graph.add_node(name.clone());
        self.nodes.insert(name.clone(), ix);
        ix
    }

    /// Adds a stable version; when it is the package's new latest, its
    /// requirements replace the package's edges.
    pub fn add_release(&mut self, name: PackageName, release: Release) {
        let version = release.version.clone();
        self.universe.add(name.clone(), release);
        let latest = self.universe.latest(&name).expect("just added").clone();
        // A new latest (or a replaced one) carries the package's edges.
        if latest.version == version {
            self.relink(&name, &latest);
        }
    }

    /// Points `name`'s outgoing edges at what `latest` requires.
    fn relink(&mut self, name: &PackageName, latest: &Release) {
        self.frozen = std::sync::OnceLock::new();
        let from = self.node(name);
        let old: Vec<_> = self
            .graph
            .edges_directed(from, Direction::Outgoing)
            .map(|e| petgraph::visit::EdgeRef::id(&e))
            .collect();
        for e in old {
            self.graph.remove_edge(e);
        }
        for dep in latest.dependencies.keys() {
            let to = self.node(dep);
            self.graph.add_edge(from, to, ());
        }
    }

    /// Removes a package with all its versions, its edges and the pins
    /// that name it.
    pub fn remove_package(&mut self, name: &PackageName) {
        self.frozen = std::sync::OnceLock::new();
        self.universe.remove(name);
        self.obsolete.remove(name);
        if let Some(ix) = self.nodes.get(name).copied() {
            let outgoing: Vec<_> = self
                .graph
                .edges_directed(ix, Direction::Outgoing)
                .map(|e| petgraph::visit::EdgeRef::id(&e))
                .collect();
            for e in outgoing {
                self.graph.remove_edge(e);
            }
            // Keep the node while something still points at it (a dependent
            // of a removed package stays a dependent of a missing one).
            if self
                .graph
                .edges_directed(ix, Direction::Incoming)
                .next()
                .is_none()
            {
                self.graph.remove_node(ix);
                self.nodes.remove(name);
            }
        }
    }

    pub fn contains(&self, name: &PackageName) -> bool {
        !self.universe.releases(name).is_empty()
    }

    pub fn latest(&self, name: &PackageName) -> Option<&Release> {
        self.universe.latest(name)
    }

    pub fn package_names(&self) -> impl Iterator<Item = &PackageName> {
        self.universe.package_names()
    }

    pub fn obsolescence(&self, name: &PackageName) -> Option<&Obsolescence> {
        self.obsolete.get(name)
    }

    pub fn is_obsolete(&self, name: &PackageName) -> bool {
        self.obsolete.contains_key(name)
    }

    pub fn set_obsolete(&mut self, name: PackageName, why: Obsolescence) {
        self.obsolete.insert(name, why);
    }

    pub fn clear_obsolete(&mut self, name: &PackageName) {
        self.obsolete.remove(name);
    }

    pub fn pin(&mut self, dependent: PackageName, dependency: PackageName, max: Version) {
        self.universe.pin(dependent, dependency, max);
    }

    pub fn unpin(&mut self, dependent: &PackageName, dependency: &PackageName) {
        self.universe.unpin(dependent, dependency);
    }

    pub fn pin_of(&self, dependent: &PackageName, dependency: &PackageName) -> Option<&Version> {
        self.universe.pin_of(dependent, dependency)
    }

    /// Packages whose latest stable version depends on `name`, sorted.
    pub fn dependents(&self, name: &PackageName) -> Vec<PackageName> {
        let Some(&ix) = self.nodes.get(name) else {
            return Vec::new();
        };
        let mut out: Vec<PackageName> = self
            .graph
            .neighbors_directed(ix, Direction::Incoming)
            .map(|d| self.graph[d].clone())
            .filter(|d| d != name)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// How many packages depend on `name` (directly).
    pub fn dependents_count(&self, name: &PackageName) -> usize {
        self.nodes
            .get(name)
            .map(|&ix| {
                self.graph
                    .neighbors_directed(ix, Direction::Incoming)
                    .filter(|&d| d != ix)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Everything that depends on `name`, directly or through others, in
    /// breadth-first order (nearest first).
    pub fn transitive_dependents(&self, name: &PackageName) -> Vec<&PackageName> {
        let Some(&start) = self.nodes.get(name) else {
            return Vec::new();
        };
        let frozen = self.frozen.get_or_init(|| Frozen::of(&self.graph));
        let mut seen = vec![false; self.graph.node_bound()];
        seen[start.index()] = true;
        let mut order: Vec<u32> = vec![start.index() as u32];
        let mut head = 0;
        while head < order.len() {
            let ix = order[head] as usize;
            head += 1;
            for &next in frozen.incoming(ix) {
                if !seen[next as usize] {
                    seen[next as usize] = true;
                    order.push(next);
                }
            }
        }
        order[1..]
            .iter()
            .map(|&ix| &self.graph[NodeIndex::new(ix as usize)])
            .collect()
    }

    /// Everything `name`'s latest version needs, directly or through
    /// others, in breadth-first order.
    pub fn dependency_closure(&self, name: &PackageName) -> Vec<&PackageName> {
        self.walk(name, Direction::Outgoing)
    }

    fn walk(&self, name: &PackageName, direction: Direction) -> Vec<&PackageName> {
        let Some(&start) = self.nodes.get(name) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.graph.node_bound()];
        seen[start.index()] = true;
        // The output doubles as the queue: no second buffer, no copies.
        let mut order: Vec<NodeIndex> = vec![start];
        let mut head = 0;
        while head < order.len() {
            let ix = order[head];
            head += 1;
            for next in self.graph.neighbors_directed(ix, direction) {
                if !seen[next.index()] {
                    seen[next.index()] = true;
                    order.push(next);
                }
            }
        }
        order[1..].iter().map(|&ix| &self.graph[ix]).collect()
    }

    /// Resolves `name` `version` against the repository, pins included.
    pub fn resolve(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Resolution, ResolveError> {
        self.universe.resolve(name, version)
    }

    /// The pins obsoleting `name` would record: one per dependent, its
    /// latest version's requirement held to `<= ` `name`'s highest version.
    pub fn obsolescence_plan(&self, name: &PackageName) -> Vec<PlannedPin> {
        let Some(max) = self.latest(name).map(|r| r.version.clone()) else {
            return Vec::new();
        };
        self.dependents(name)
            .into_iter()
            .filter_map(|d| {
                let latest = self.latest(&d)?;
                Some(PlannedPin {
                    requirement: latest.dependencies.get(name)?.clone(),
                    version: latest.version.clone(),
                    dependent_obsolete: self.is_obsolete(&d),
                    dependent: d,
                    max: max.clone(),
                })
            })
            .collect()
    }

    /// Obsolete packages that nothing depends on any more: what removal takes.
    pub fn removable(&self) -> Vec<PackageName> {
        let mut out: Vec<PackageName> = self
            .obsolete
            .keys()
            .filter(|p| self.contains(p) && self.dependents_count(p) == 0)
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Removes removable packages until none is left (removal cascades);
    /// returns them in the order removed.
    pub fn remove_cascade(&mut self) -> Vec<PackageName> {
        let mut removed = Vec::new();
        loop {
            let next = self.removable();
            if next.is_empty() {
                return removed;
            }
            for p in next {
                self.remove_package(&p);
                removed.push(p);
            }
        }
    }

    /// Checks that the graph says what the releases say: one edge per
    /// requirement of each package's latest version, and nothing else.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut expected: BTreeSet<(PackageName, PackageName)> = BTreeSet::new();
        for name in self.package_names() {
            let latest = self.latest(name).ok_or(format!("{name} has no release"))?;
            for dep in latest.dependencies.keys() {
                expected.insert((name.clone(), dep.clone()));
            }
        }
        let mut actual = BTreeSet::new();
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).ok_or("dangling edge")?;
            if !actual.insert((self.graph[a].clone(), self.graph[b].clone())) {
                return Err(format!(
                    "duplicate edge {} -> {}",
                    self.graph[a], self.graph[b]
                ));
            }
        }
        if expected != actual {
            return Err(format!(
                "edges differ: expected {expected:?}, found {actual:?}"
            ));
        }
        for (name, &ix) in &self.nodes {
            if self.graph.node_weight(ix) != Some(name) {
                return Err(format!("index of {name} points elsewhere"));
            }
        }
        for name in self.obsolete.keys() {
            if !self.contains(name) {
                return Err(format!("{name} is obsolete but not in the repository"));
            }
        }
        Ok(())
    }

    /// The pins of every dependent, for the index: dependent -> dependency -> max.
    pub fn pins(&self) -> BTreeMap<PackageName, BTreeMap<PackageName, Version>> {
        let mut out: BTreeMap<PackageName, BTreeMap<PackageName, Version>> = BTreeMap::new();
        for name in self.package_names() {
            if let Some(latest) = self.latest(name) {
                for dep in latest.dependencies.keys() {
                    if let Some(max) = self.pin_of(name, dep) {
                        out.entry(name.clone())
                            .or_default()
                            .insert(dep.clone(), max.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{n, rel};

    fn sorted(names: Vec<&PackageName>) -> Vec<PackageName> {
        let mut v: Vec<PackageName> = names.into_iter().cloned().collect();
        v.sort();
        v
    }

    fn repo() -> StableRepo {
        let mut r = StableRepo::new();
        r.add_release(n("a"), rel("1.0.0", &[]));
        r.add_release(n("a"), rel("1.2.0", &[]));
        r.add_release(n("b"), rel("1.0.0", &[("a", "^1")]));
        r.add_release(n("c"), rel("1.0.0", &[("a", "^1.1")]));
        r.add_release(n("d"), rel("1.0.0", &[("b", "^1")]));
        r
    }

    #[test]
    fn dependents_follow_latest_versions() {
        let mut r = repo();
        assert_eq!(r.dependents(&n("a")), [n("b"), n("c")]);
        assert_eq!(
            sorted(r.transitive_dependents(&n("a"))),
            [n("b"), n("c"), n("d")]
        );
        assert_eq!(sorted(r.dependency_closure(&n("d"))), [n("a"), n("b")]);
        // b drops a in a newer version: no longer a dependent.
        r.add_release(n("b"), rel("2.0.0", &[]));
        assert_eq!(r.dependents(&n("a")), [n("c")]);
        // An older version promoted later does not change the latest's edges.
        r.add_release(n("b"), rel("1.5.0", &[("a", "^1")]));
        assert_eq!(r.dependents(&n("a")), [n("c")]);
        r.check_invariants().unwrap();
    }

    #[test]
    fn the_plan_pins_each_dependent_to_the_highest_version() {
        let mut r = repo();
        r.set_obsolete(
            n("c"),
            Obsolescence {
                reason: "x".into(),
                replacement: None,
            },
        );
        let plan = r.obsolescence_plan(&n("a"));
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|p| p.max == Version::new(1, 2, 0)));
        assert!(
            plan.iter()
                .find(|p| p.dependent == n("c"))
                .unwrap()
                .dependent_obsolete
        );
    }

    #[test]
    fn removal_cascades_once_nothing_depends() {
        let mut r = repo();
        r.set_obsolete(
            n("a"),
            Obsolescence {
                reason: "old".into(),
                replacement: None,
            },
        );
        r.set_obsolete(
            n("c"),
            Obsolescence {
                reason: "old".into(),
                replacement: None,
            },
        );
        // c has no dependents: it goes; a still has b.
        assert_eq!(r.remove_cascade(), [n("c")]);
        assert!(r.contains(&n("a")));
        r.add_release(n("b"), rel("2.0.0", &[]));
        assert_eq!(r.remove_cascade(), [n("a")]);
        assert!(!r.contains(&n("a")));
        r.check_invariants().unwrap();
    }
}

/// The graph against a naive model: random repositories and operations
/// give the same dependents, pins and removals.
#[cfg(test)]
mod model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::domain::fixtures::n;

    const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

    #[derive(Clone, Debug)]
    enum Op {
        Release {
            pkg: usize,
            minor: u64,
            deps: Vec<usize>,
        },
        Obsolete(usize),
        Undo(usize),
        Cascade,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..NAMES.len(), 0u64..4, proptest::collection::vec(0..NAMES.len(), 0..3))
                .prop_map(|(pkg, minor, deps)| Op::Release { pkg, minor, deps }),
            2 => (0..NAMES.len()).prop_map(Op::Obsolete),
            1 => (0..NAMES.len()).prop_map(Op::Undo),
            1 => Just(Op::Cascade),
        ]
    }

    /// Everything as plain sets and maps, recomputed from scratch each time.
    #[derive(Default)]
    struct Naive {
        releases: BTreeMap<String, BTreeMap<Version, BTreeSet<String>>>,
        obsolete: BTreeSet<String>,
        pins: BTreeMap<(String, String), Version>,
    }

    impl Naive {
        fn latest_deps(&self, p: &str) -> BTreeSet<String> {
            self.releases
                .get(p)
                .and_then(|r| r.values().next_back().cloned())
                .unwrap_or_default()
        }

        fn dependents(&self, p: &str) -> Vec<String> {
            self.releases
                .keys()
                .filter(|d| *d != p && self.latest_deps(d).contains(p))
                .cloned()
                .collect()
        }

        fn transitive(&self, p: &str) -> Vec<String> {
            let mut seen = BTreeSet::from([p.to_owned()]);
            let mut todo = vec![p.to_owned()];
            while let Some(x) = todo.pop() {
                for d in self
                    .releases
                    .keys()
                    .filter(|d| self.latest_deps(d).contains(&x))
                {
                    if seen.insert(d.clone()) {
                        todo.push(d.clone());
                    }
                }
            }
            seen.remove(p);
            seen.into_iter().collect()
        }

        fn obsolete(&mut self, p: &str) {
            let Some(max) = self
                .releases
                .get(p)
                .and_then(|r| r.keys().next_back().cloned())
            else {
                return;
            };
            for d in self.dependents(p) {
                self.pins.insert((d, p.to_owned()), max.clone());
            }
            self.obsolete.insert(p.to_owned());
        }

        fn cascade(&mut self) -> Vec<String> {
            let mut removed = Vec::new();
            loop {
                let next: Vec<String> = self
                    .obsolete
                    .iter()
                    .filter(|p| self.releases.contains_key(*p) && self.dependents(p).is_empty())
                    .cloned()
                    .collect();
                if next.is_empty() {
                    return removed;
                }
                for p in next {
                    self.releases.remove(&p);
                    self.obsolete.remove(&p);
                    self.pins.retain(|(a, b), _| *a != p && *b != p);
                    removed.push(p);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn the_graph_agrees_with_a_naive_model(ops in proptest::collection::vec(op(), 1..40)) {
            let mut repo = StableRepo::new();
            let mut naive = Naive::default();
            for op in ops {
                match op {
                    Op::Release { pkg, minor, deps } => {
                        let name = NAMES[pkg];
                        if naive.obsolete.contains(name) {
                            continue; // obsolete packages accept no uploads
                        }
                        let deps: BTreeSet<String> = deps.into_iter().map(|d| NAMES[d].to_owned()).filter(|d| d != name).collect();
                        let version = Version::new(1, minor, 0);
                        let release = Release {
                            version: version.clone(),
                            dependencies: deps.iter().map(|d| (n(d), VersionReq::STAR)).collect(),
                        };
                        repo.add_release(n(name), release);
                        naive.releases.entry(name.to_owned()).or_default().insert(version, deps);
                    }
                    Op::Obsolete(p) => {
                        let name = n(NAMES[p]);
                        if repo.contains(&name) && !repo.is_obsolete(&name) {
                            for pin in repo.obsolescence_plan(&name) {
                                repo.pin(pin.dependent, name.clone(), pin.max);
                            }
                            repo.set_obsolete(name.clone(), Obsolescence { reason: "r".into(), replacement: None });
                            naive.obsolete(NAMES[p]);
                        }
                    }
                    Op::Undo(p) => {
                        let name = n(NAMES[p]);
                        if repo.is_obsolete(&name) {
                            repo.clear_obsolete(&name);
                            let all: Vec<PackageName> = repo.package_names().cloned().collect();
                            for d in all {
                                repo.unpin(&d, &name);
                            }
                            naive.obsolete.remove(NAMES[p]);
                            naive.pins.retain(|(_, b), _| b != NAMES[p]);
                        }
                    }
                    Op::Cascade => {
                        let got: Vec<String> = repo.remove_cascade().into_iter().map(String::from).collect();
                        prop_assert_eq!(got, naive.cascade());
                    }
                }
                prop_assert!(repo.check_invariants().is_ok(), "{:?}", repo.check_invariants());
                for name in NAMES {
                    let p = n(name);
                    let dependents: Vec<String> = repo.dependents(&p).into_iter().map(String::from).collect();
                    prop_assert_eq!(&dependents, &naive.dependents(name), "dependents of {}", name);
                    let mut transitive: Vec<String> = repo.transitive_dependents(&p).into_iter().map(|x| x.to_string()).collect();
                    transitive.sort();
                    prop_assert_eq!(transitive, naive.transitive(name), "transitive dependents of {}", name);
                    prop_assert_eq!(repo.is_obsolete(&p), naive.obsolete.contains(name));
                    for other in NAMES {
                        let pin = repo.pin_of(&p, &n(other)).cloned();
                        prop_assert_eq!(pin, naive.pins.get(&(name.to_owned(), other.to_owned())).cloned(), "pin {} -> {}", name, other);
                    }
                }
            }
        }
    }
}
