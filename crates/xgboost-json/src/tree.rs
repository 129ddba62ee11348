//! Trees flattened into one node array, walked the way xgboost's CPU predictor walks them.

use crate::{Error, schema::GbTreeModel};

const LEAF: u32 = u32::MAX;
const DEFAULT_LEFT: u32 = 1 << 31;

/// 16 bytes: the split feature (high bit: missing goes left), the split threshold or the
/// leaf value, and absolute child indexes (`left == LEAF` marks a leaf).
#[derive(Clone, Copy, Debug)]
struct Node {
    feature: u32,
    value: f32,
    left: u32,
    right: u32,
}

#[derive(Debug)]
pub(crate) struct Forest {
    nodes: Vec<Node>,
    /// Root index, output group (or `VECTOR` for vector-leaf trees) and dart weight per tree.
    roots: Vec<(u32, u32, f32)>,
    /// Vector leaves: a leaf's `value` is an offset into this pool (`groups` values each).
    leaf_vectors: Vec<f32>,
}

const VECTOR: u32 = u32::MAX;

impl Forest {
    pub(crate) fn build(
        model: &GbTreeModel,
        dart_weights: Option<&[f32]>,
        groups: usize,
    ) -> Result<Self, Error> {
        if model.tree_info.len() != model.trees.len() {
            return Err(Error::Invalid(format!(
                "{} trees but {} tree_info entries",
                model.trees.len(),
                model.tree_info.len()
            )));
        }
        if let Some(w) = dart_weights
            && w.len() != model.trees.len()
        {
            return Err(Error::Invalid(format!(
                "dart: {} trees but {} weight_drop entries",
                model.trees.len(),
                w.len()
            )));
        }
        let mut forest = Forest {
            nodes: Vec::new(),
            roots: Vec::new(),
            leaf_vectors: Vec::new(),
        };
        for (t, tree) in model.trees.iter().enumerate() {
            let group = model.tree_info[t];
            if group >= groups {
                return Err(Error::Invalid(format!(
                    "tree {t} feeds group {group} of {groups}"
                )));
            }
            let weight = dart_weights.map_or(1.0, |w| w[t]);
            forest.push_tree(t, tree, group as u32, weight, groups)?;
        }
        Ok(forest)
    }

    fn push_tree(
        &mut self,
        t: usize,
        tree: &crate::schema::TreeDoc,
        group: u32,
        weight: f32,
        groups: usize,
    ) -> Result<(), Error> {
        let n: usize = tree
            .tree_param
            .num_nodes
            .parse()
            .map_err(|_| Error::Invalid(format!("tree {t}: num_nodes")))?;
        let leaf_size: usize = match &tree.tree_param.size_leaf_vector {
            Some(s) => s
                .parse()
                .map_err(|_| Error::Invalid(format!("tree {t}: size_leaf_vector")))?,
            None => 1,
        };
        let vector_leaves = leaf_size > 1;
        if vector_leaves && leaf_size != groups {
            return Err(Error::Invalid(format!(
                "tree {t}: {leaf_size}-leaf vector for {groups} groups"
            )));
        }
        let lens = [
            tree.left_children.len(),
            tree.right_children.len(),
            tree.split_indices.len(),
            tree.default_left.len(),
        ];
        if n == 0
            || lens.iter().any(|&l| l != n)
            || (!vector_leaves && tree.split_conditions.len() != n)
        {
            return Err(Error::Invalid(format!(
                "tree {t}: arrays do not match num_nodes {n}"
            )));
        }
        if tree.split_type.iter().any(|&s| s != 0) {
            return Err(Error::Unsupported(format!("tree {t}: categorical splits")));
        }
        if vector_leaves && tree.base_weights.len() != n * leaf_size {
            return Err(Error::Invalid(format!(
                "tree {t}: base_weights do not hold {n} leaf vectors"
            )));
        }
        check_is_tree(t, &tree.left_children, &tree.right_children)?;
        let offset = self.nodes.len() as u32;
        for i in 0..n {
            let (l, r) = (tree.left_children[i], tree.right_children[i]);
            let node = if l < 0 {
                let value = if vector_leaves {
                    let pool = self.leaf_vectors.len();
                    self.leaf_vectors.extend(
                        tree.base_weights[i * leaf_size..(i + 1) * leaf_size]
                            .iter()
                            .map(|v| v * weight),
                    );
                    pool as f32
                } else {
                    tree.split_conditions[i] * weight
                };
                Node {
                    feature: 0,
                    value,
                    left: LEAF,
                    right: LEAF,
                }
            } else {
                let (l, r) = (l as usize, r as usize);
                if l >= n || r >= n || r == 0 || l == 0 {
                    return Err(Error::Invalid(format!(
                        "tree {t}: node {i} has bad children"
                    )));
                }
                let threshold = if vector_leaves {
                    tree.split_conditions.get(i).copied().ok_or_else(|| {
                        Error::Invalid(format!("tree {t}: node {i} has no split condition"))
                    })?
                } else {
                    tree.split_conditions[i]
                };
                let feature = tree.split_indices[i] & !DEFAULT_LEFT;
                let flag = if tree.default_left[i] != 0 {
                    DEFAULT_LEFT
                } else {
                    0
                };
                Node {
                    feature: feature | flag,
                    value: threshold,
                    left: offset + l as u32,
                    right: offset + r as u32,
                }
            };
            self.nodes.push(node);
        }
        self.roots
            .push((offset, if vector_leaves { VECTOR } else { group }, weight));
        Ok(())
    }

    /// Adds every tree's leaf for `row` to `margins`, in tree order.
    #[inline]
    pub(crate) fn accumulate(&self, row: &[f32], margins: &mut [f32]) {
        for &(root, group, _) in &self.roots {
            let leaf = self.leaf(root, row);
            if group == VECTOR {
                let pool = leaf.value as usize;
                for (m, v) in margins.iter_mut().zip(&self.leaf_vectors[pool..]) {
                    *m += v;
                }
            } else {
                margins[group as usize] += leaf.value;
            }
        }
    }

    #[inline]
    fn leaf(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.left != LEAF {
            let feature = (node.feature & !DEFAULT_LEFT) as usize;
            let x = row.get(feature).copied().unwrap_or(f32::NAN);
            let next = if x.is_nan() {
                if node.feature & DEFAULT_LEFT != 0 {
                    node.left
                } else {
                    node.right
                }
            } else if x < node.value {
                node.left
            } else {
                node.right
            };
            node = &self.nodes[next as usize];
        }
        node
    }
}

/// Every node is reached from the root once at most: no cycle (which would make a walk loop
/// forever) and no node shared by two parents. Children out of range are reported too.
fn check_is_tree(t: usize, left: &[i32], right: &[i32]) -> Result<(), Error> {
    let n = left.len();
    let mut seen = vec![false; n];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::Invalid(format!(
                "tree {t}: node {i} is reached twice (a cycle, or a node with two parents): not a tree"
            )));
        }
        if left[i] < 0 {
            continue; // a leaf (the walk stops at a negative left child)
        }
        for child in [left[i], right[i]] {
            let c = usize::try_from(child).unwrap_or(usize::MAX);
            if c >= n {
                return Err(Error::Invalid(format!(
                    "tree {t}: node {i} has a child {c} beyond its {n} nodes"
                )));
            }
            stack.push(c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod shape_tests {
    use super::check_is_tree;

    #[test]
    fn cycles_and_shared_nodes_are_not_trees() {
        assert!(check_is_tree(0, &[1, -1, -1], &[2, -1, -1]).is_ok());
        let cycle = check_is_tree(0, &[1, 0, -1], &[2, 2, -1]).unwrap_err();
        assert!(cycle.to_string().contains("reached twice"), "{cycle}");
        assert!(
            check_is_tree(0, &[1, 3, -1, -1], &[2, 3, 3, -1]).is_err(),
            "shared node"
        );
        assert!(check_is_tree(0, &[5], &[1]).is_err(), "out of range");
    }
}
