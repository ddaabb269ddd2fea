//! Which tables are created together: the tables that foreign keys tie to each other (the
//! connected components of the foreign-key graph, cycles and self-references included) are
//! created on one connection, one after the other. Created at once on two connections, two
//! tables whose foreign keys reference each other (Sakila's `store` and `staff`) can deadlock
//! in the server's data dictionary, even with `foreign_key_checks=0`; unrelated tables are
//! created in parallel.

use std::collections::HashMap;

use crate::snapshot::logical::format::{DumpMeta, Table, TableName};

/// A table of the dump, by database name.
pub type DumpTable<'m> = (&'m str, &'m Table);

/// The dump's tables in groups to create on one connection each, largest group first (so the
/// long one does not start last), each group in dump order. A snapshot from before foreign
/// keys were recorded gives one group: without the graph, only creating one table at a time
/// is safe.
pub fn creation_groups(meta: &DumpMeta) -> Vec<Vec<DumpTable<'_>>> {
    let tables: Vec<DumpTable<'_>> = meta
        .databases
        .iter()
        .flat_map(|db| db.tables.iter().map(move |t| (db.name.as_str(), t)))
        .collect();
    if tables.iter().any(|(_, t)| t.references.is_none()) {
        return if tables.is_empty() {
            Vec::new()
        } else {
            vec![tables]
        };
    }
    let index: HashMap<TableName, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, (db, t))| {
            let name = TableName {
                database: db.to_string(),
                table: t.name.clone(),
            };
            (name, i)
        })
        .collect();
    let mut sets = DisjointSets::new(tables.len());
    for (i, (_, t)) in tables.iter().enumerate() {
        // A table outside the dump (a filtered-out database) is not created: no tie.
        for referenced in t.references.iter().flatten() {
            if let Some(&j) = index.get(referenced) {
                sets.join(i, j);
            }
        }
    }
    let mut by_root: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<DumpTable<'_>>> = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
        let root = sets.root(i);
        let g = *by_root.entry(root).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(table);
    }
    // Stable: equal sizes keep dump order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    groups
}

/// Union-find over `0..n`.
struct DisjointSets {
    parent: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        DisjointSets {
            parent: (0..n).collect(),
        }
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            self.parent[rb] = ra;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::logical::format::Database;

    fn table(name: &str, references: Option<&[(&str, &str)]>) -> Table {
        Table {
            name: name.into(),
            engine: "InnoDB".into(),
            create: String::new(),
            deferred_indexes: Vec::new(),
            columns: Vec::new(),
            chunks: Vec::new(),
            rows: 0,
            content: None,
            references: references.map(|r| {
                r.iter()
                    .map(|(d, t)| TableName {
                        database: d.to_string(),
                        table: t.to_string(),
                    })
                    .collect()
            }),
        }
    }

    fn meta(dbs: Vec<(&str, Vec<Table>)>) -> DumpMeta {
        DumpMeta {
            format: String::new(),
            flavor: String::new(),
            version: String::new(),
            databases: dbs
                .into_iter()
                .map(|(name, tables)| Database {
                    name: name.into(),
                    create: String::new(),
                    tables,
                    views: Vec::new(),
                    routines: Vec::new(),
                    triggers: Vec::new(),
                    events: Vec::new(),
                })
                .collect(),
            users: Vec::new(),
            rows: 0,
        }
    }

    fn names(groups: &[Vec<DumpTable<'_>>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().map(|(d, t)| format!("{d}.{}", t.name)).collect())
            .collect()
    }

    #[test]
    fn cycles_chains_and_self_references_form_one_group_each() {
        let m = meta(vec![
            (
                "s",
                vec![
                    table("address", Some(&[])),
                    table("staff", Some(&[("s", "store"), ("s", "address")])),
                    table("store", Some(&[("s", "staff")])),
                    table("lonely", Some(&[])),
                    table("employee", Some(&[("s", "employee")])),
                    table("gone", Some(&[("filtered", "x")])),
                ],
            ),
            ("o", vec![table("ref", Some(&[("s", "lonely")]))]),
        ]);
        assert_eq!(
            names(&creation_groups(&m)),
            vec![
                vec!["s.address", "s.staff", "s.store"],
                vec!["s.lonely", "o.ref"],
                vec!["s.employee"],
                vec!["s.gone"],
            ]
        );
    }

    #[test]
    fn a_snapshot_without_recorded_foreign_keys_is_created_on_one_connection() {
        let m = meta(vec![(
            "s",
            vec![table("a", Some(&[])), table("b", None), table("c", None)],
        )]);
        assert_eq!(names(&creation_groups(&m)), vec![vec!["s.a", "s.b", "s.c"]]);
        assert!(creation_groups(&meta(vec![("s", vec![])])).is_empty());
    }
}
