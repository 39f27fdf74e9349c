//! `weft.NotImplementedAnalyzer`: every field of a user's configuration
//! that Weft accepts but does not honour ([`crate::unimplemented::TABLE`],
//! the same table `weft apply` warns from), and fields Istio removed.

use super::{DEPRECATED, Input, Message, NOT_IMPLEMENTED};
use crate::unimplemented::{Treatment, scan};

pub fn fields(input: &Input, out: &mut Vec<Message>) {
    for object in input
        .objects
        .iter()
        .filter(|o| o.group.ends_with("istio.io"))
    {
        for found in scan(&object.kind, &object.raw) {
            let (code, what) = match found.row.treatment {
                Treatment::Ignored => (NOT_IMPLEMENTED, "Field not implemented by Weft"),
                Treatment::Removed => (DEPRECATED, "Removed field"),
            };
            out.push(object.message(
                code,
                format!("{what} {}: {}", found.path, found.row.message),
            ));
        }
    }
}
