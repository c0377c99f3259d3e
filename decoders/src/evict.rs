//! What a decoder forgets when it tracks more connection states than
//! `limits.connections`: the longest idle quarter, idleness being the
//! sequence number of the last event each state saw. One rule for http1,
//! http2 and auto.

use rustc_hash::FxHashMap;

/// How many states go at once: a quarter of the limit, at least one.
pub(crate) fn how_many(limit: usize) -> usize {
    limit.div_ceil(4).max(1)
}

/// The `(conn, end)` of the `n` states with the lowest last sequence number,
/// the idlest first. `states` yields `(last_seq, conn, end)`.
pub(crate) fn idlest(states: impl Iterator<Item = (u64, u64, u64)>, n: usize) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64, u64)> = states.collect();
    if n < all.len() {
        // The n lowest in front, without sorting all of them.
        all.select_nth_unstable(n);
        all.truncate(n);
    }
    all.sort_unstable();
    all.into_iter().map(|(_, c, e)| (c, e)).collect()
}

/// Takes the state of `conn` that `is_end` picks out of a table holding one
/// per end, and forgets the connection once it has none left.
pub(crate) fn take_end<T>(
    table: &mut FxHashMap<u64, Vec<T>>,
    conn: u64,
    is_end: impl Fn(&T) -> bool,
) -> Option<T> {
    let list = table.get_mut(&conn)?;
    let i = list.iter().position(is_end)?;
    let t = list.swap_remove(i);
    if list.is_empty() {
        table.remove(&conn);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idlest_come_first_and_only_n_of_them() {
        let states = [(9, 1, 0), (3, 2, 0), (7, 2, 1), (1, 3, 5), (5, 4, 0)];
        assert_eq!(idlest(states.into_iter(), 2), [(3, 5), (2, 0)]);
        assert_eq!(idlest(states.into_iter(), 9).len(), 5);
        assert_eq!(idlest(std::iter::empty(), 3), []);
        assert_eq!((how_many(1), how_many(4), how_many(10)), (1, 1, 3));
    }

    #[test]
    fn a_connection_goes_with_its_last_end() {
        let mut t: FxHashMap<u64, Vec<u64>> = FxHashMap::default();
        t.insert(7, vec![1, 2]);
        assert_eq!(take_end(&mut t, 7, |&e| e == 2), Some(2));
        assert_eq!(take_end(&mut t, 7, |&e| e == 2), None);
        assert_eq!(take_end(&mut t, 7, |&e| e == 1), Some(1));
        assert!(t.is_empty());
        assert_eq!(take_end(&mut t, 8, |_| true), None);
    }
}
