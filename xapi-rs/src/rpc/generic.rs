//! The generic messages every class has by its fields (the definition's
//! implicit ones): records, lookups, getters, setters, map and set
//! updates, constructor and destructor.

use super::{get_arg, new_ref, new_uuid, param_str, void, Ctx, R};
use crate::db;
use crate::generated::errors;
use crate::model::value::{Record, V};
use crate::model::{Class, Generic, Ty};
use std::collections::BTreeMap;

fn require(ctx: &Ctx, c: &Class, r: &str) -> R<Record> {
    ctx.db
        .get(c.name, r)
        .ok_or_else(|| errors::handle_invalid(c.name, r))
}

/// The hidden `get_all_records_where(expr)` / `get_all_where(expr)`.
pub(super) fn where_call(ctx: &Ctx, c: &'static Class, records: bool, expr: &str) -> R<V> {
    let expr = crate::db::expr::parse(expr).map_err(|e| errors::invalid_value(expr, &e))?;
    let hits = ctx
        .db
        .all(c.name)
        .into_iter()
        .filter(|(_, rec)| expr.eval(rec));
    Ok(if records {
        V::M(hits.map(|(r, rec)| (r, V::M(rec))).collect())
    } else {
        V::A(hits.map(|(r, _)| V::S(r)).collect())
    })
}

pub(super) fn call(ctx: &Ctx, c: &'static Class, g: Generic, args: &[V]) -> R<V> {
    let arg = |i: usize| args.get(i).map(param_str).unwrap_or_default();
    let field = |f: &str| c.field(f).ok_or_else(|| errors::internal_error(f));
    match g {
        Generic::GetRecord => Ok(V::M(require(ctx, c, &arg(0))?)),
        Generic::GetByUuid => {
            let u = arg(0);
            ctx.db
                .find_by_field(c.name, "uuid", &u)
                .into_iter()
                .next()
                .map(V::S)
                .ok_or_else(|| errors::uuid_invalid(c.name, &u))
        }
        Generic::GetAll => Ok(V::A(ctx.db.refs(c.name).into_iter().map(V::S).collect())),
        Generic::GetAllRecords => Ok(V::M(
            ctx.db
                .all(c.name)
                .into_iter()
                .map(|(r, rec)| (r, V::M(rec)))
                .collect(),
        )),
        Generic::GetByNameLabel => Ok(V::A(
            ctx.db
                .find_by_field(c.name, "name_label", &arg(0))
                .into_iter()
                .map(V::S)
                .collect(),
        )),
        Generic::Create => {
            // The argument was coerced to a whole record of the class.
            let mut rec = match args.first() {
                Some(V::M(m)) => m.clone(),
                _ => Record::new(),
            };
            rec.insert("uuid".into(), V::S(new_uuid()));
            db::normalise(c, &mut rec);
            let r = new_ref();
            ctx.db.create(c.name, &r, rec)?;
            Ok(V::S(r))
        }
        Generic::Destroy => {
            let r = arg(0);
            require(ctx, c, &r)?;
            ctx.db.delete(c.name, &r)?;
            Ok(void())
        }
        Generic::Get(f) => {
            let rec = require(ctx, c, &arg(0))?;
            Ok(rec.get(f).cloned().unwrap_or_else(void))
        }
        Generic::Set(f) => {
            let v = get_arg(args, 1, &field(f)?.ty, f)?;
            ctx.db.update(c.name, &arg(0), |rec| {
                rec.insert(f.to_string(), v);
            })?;
            Ok(void())
        }
        Generic::AddTo(f) | Generic::RemoveFrom(f) => {
            let Ty::Map(_, vt) = field(f)?.ty else {
                return Err(errors::internal_error(f));
            };
            let r = arg(0);
            let key = arg(1);
            let val = match g {
                Generic::AddTo(_) => Some(get_arg(args, 2, vt, f)?),
                _ => None,
            };
            ctx.db.update(c.name, &r, |rec| {
                let mut m = match rec.get(f) {
                    Some(V::M(m)) => m.clone(),
                    _ => BTreeMap::new(),
                };
                match val {
                    Some(v) => {
                        if m.contains_key(&key) {
                            let uuid = rec.get("uuid").and_then(V::as_str).unwrap_or(&r);
                            return Err(errors::map_duplicate_key(c.name, f, uuid, &key));
                        }
                        m.insert(key.clone(), v);
                    }
                    None => {
                        m.remove(&key);
                    }
                }
                rec.insert(f.to_string(), V::M(m));
                Ok(())
            })??;
            Ok(void())
        }
        Generic::Add(f) | Generic::Remove(f) => {
            let Ty::Set(et) = field(f)?.ty else {
                return Err(errors::internal_error(f));
            };
            let val = get_arg(args, 1, et, f)?;
            let adding = matches!(g, Generic::Add(_));
            ctx.db.update(c.name, &arg(0), |rec| {
                let mut s = match rec.get(f) {
                    Some(V::A(a)) => a.clone(),
                    _ => vec![],
                };
                s.retain(|x| *x != val);
                if adding {
                    s.push(val);
                }
                rec.insert(f.to_string(), V::A(s));
            })?;
            Ok(void())
        }
    }
}
