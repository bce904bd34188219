//! Unit tests of the expansions' shape; `ui-tests/tests/ui` checks what the
//! compiler makes of them.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{File, ImplItem, Item, ItemImpl};

use crate::expand;

fn expand(attr: TokenStream, item: TokenStream) -> File {
    parse(expand::task(attr, item))
}

fn parse(out: TokenStream) -> File {
    syn::parse2(out.clone()).unwrap_or_else(|e| panic!("unparsable output ({e}): {out}"))
}

fn compact(tokens: impl ToTokens) -> String {
    tokens.to_token_stream().to_string().replace(' ', "")
}

/// The `impl <trait> for ..` whose trait path ends in `last`.
fn impl_of<'f>(file: &'f File, last: &str) -> &'f ItemImpl {
    file.items
        .iter()
        .find_map(|item| match item {
            Item::Impl(i)
                if i.trait_
                    .as_ref()
                    .is_some_and(|(_, path, _)| path.segments.last().unwrap().ident == last) =>
            {
                Some(i)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no impl of {last}"))
}

/// The value of `type <name> = ..;` or `const <name>: _ = ..;` in `imp`.
fn assoc(imp: &ItemImpl, name: &str) -> String {
    imp.items
        .iter()
        .find_map(|item| match item {
            ImplItem::Type(t) if t.ident == name => Some(compact(&t.ty)),
            ImplItem::Const(c) if c.ident == name => Some(compact(&c.expr)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {name}"))
}

fn compile_errors(file: &File) -> Vec<String> {
    file.items
        .iter()
        .filter_map(|item| match item {
            Item::Macro(m) if m.mac.path.segments.last().unwrap().ident == "compile_error" => {
                Some(m.mac.tokens.to_string())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn sync_function() {
    let file = expand(
        quote!(),
        quote! {
            /// Squares.
            #[inline]
            pub fn square(x: u64) -> u64 { x * x }
        },
    );
    let Item::Fn(f) = &file.items[0] else {
        panic!("the function comes first")
    };
    assert_eq!(f.sig.ident, "__mproc_task_square");
    assert!(matches!(f.vis, syn::Visibility::Inherited));
    assert!(f.attrs.iter().any(|a| a.path().is_ident("inline")));
    assert!(f
        .attrs
        .iter()
        .all(|a| compact(a) != compact(quote!(#[doc = " Squares."]))));

    let Item::Struct(s) = &file.items[1] else {
        panic!("then the struct")
    };
    assert_eq!(s.ident, "square");
    assert!(matches!(s.vis, syn::Visibility::Public(_)));
    assert!(matches!(s.fields, syn::Fields::Unit));
    assert!(s.attrs.iter().any(|a| a.path().is_ident("doc")));

    assert_eq!(assoc(impl_of(&file, "Deref"), "Target"), "fn(u64)->u64");
    let task = impl_of(&file, "Task");
    assert_eq!(compact(&task.trait_.as_ref().unwrap().1), "::mproc::Task");
    assert_eq!(assoc(task, "Args"), "u64");
    assert_eq!(assoc(task, "Output"), "u64");
    assert_eq!(assoc(task, "IS_ASYNC"), "false");
    assert_eq!(
        assoc(task, "NAME"),
        r#"::core::concat!(::core::module_path!(),"::","square")"#
    );
    let all = compact(&file);
    assert!(all.contains("TaskCall::Ready(__mproc_task_square(__mproc_arg0))"));
    assert!(all.contains("TaskEntry::of::<square>()"));
    assert!(
        !all.contains("assert_wire"),
        "one argument needs no extra check"
    );
}

#[test]
fn async_function_with_several_arguments() {
    let file = expand(
        quote!(),
        quote!(
            async fn join(a: String, b: String) -> String {
                a + &b
            }
        ),
    );
    let fns: Vec<String> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Fn(f) => Some(f.sig.ident.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(fns, ["__mproc_task_join", "__mproc_task_join_boxed"]);
    let target = "fn(String,String)->::core::pin::Pin<::std::boxed::Box<dyn::core::future::\
                  Future<Output=String>+::core::marker::Send>>";
    assert_eq!(assoc(impl_of(&file, "Deref"), "Target"), target);
    let task = impl_of(&file, "Task");
    assert_eq!(assoc(task, "Args"), "(String,String)");
    assert_eq!(assoc(task, "IS_ASYNC"), "true");
    let all = compact(&file);
    assert!(all.contains("TaskCall::Pending(__mproc_task_join_boxed(__mproc_arg0,__mproc_arg1))"));
    assert_eq!(all.matches("assert_wire::<String>()").count(), 2);
}

#[test]
fn no_arguments_and_no_return_type() {
    let file = expand(
        quote!(),
        quote!(
            fn tick() {}
        ),
    );
    assert_eq!(assoc(impl_of(&file, "Deref"), "Target"), "fn()");
    let task = impl_of(&file, "Task");
    assert_eq!(assoc(task, "Args"), "()");
    assert_eq!(assoc(task, "Output"), "()");
}

#[test]
fn raw_identifier_cfg_and_crate_path() {
    let file = expand(
        quote!(crate = ::other::mproc),
        quote!(
            #[cfg(unix)]
            fn r#type(x: u8) -> u8 {
                x
            }
        ),
    );
    let task = impl_of(&file, "Task");
    assert_eq!(
        compact(&task.trait_.as_ref().unwrap().1),
        "::other::mproc::Task"
    );
    assert!(assoc(task, "NAME").ends_with(r#""type")"#));
    assert!(compact(&file).contains("fn__mproc_task_type("));
    for item in &file.items {
        let attrs = match item {
            Item::Fn(i) => &i.attrs,
            Item::Struct(i) => &i.attrs,
            Item::Impl(i) => &i.attrs,
            Item::Const(i) => &i.attrs,
            other => panic!("unexpected item {}", compact(other)),
        };
        assert!(
            attrs.iter().any(|a| a.path().is_ident("cfg")),
            "no cfg on {}",
            compact(item)
        );
    }
}

#[test]
fn errors_are_all_reported_and_the_function_kept() {
    let original = quote! {
        unsafe fn bad<T>(&self, s: &str, t: impl Copy) -> Cow<'a, str> { Cow::Borrowed(s) }
    };
    let file = expand(quote!(unknown), original.clone());
    let errors = compile_errors(&file);
    let expected = [
        "unknown argument",
        "cannot be `unsafe fn`",
        "cannot be generic",
        "cannot take `self`",
        "cannot be borrowed",
        "cannot be `impl Trait`",
        "cannot return borrowed data",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(expected) {
        assert!(error.contains(expected), "{error} does not say {expected}");
    }
    let kept: Vec<&Item> = file
        .items
        .iter()
        .filter(|i| !matches!(i, Item::Macro(_)))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(compact(kept[0]), compact(original));
}

#[test]
fn static_lifetimes_and_patterns_are_accepted() {
    let file = expand(
        quote!(),
        quote!(
            fn f((a, b): (u8, u8), mut c: Cow<'static, str>, _: u8) -> Cow<'static, str> {
                c
            }
        ),
    );
    assert!(compile_errors(&file).is_empty());
    assert_eq!(
        assoc(impl_of(&file, "Task"), "Args"),
        "((u8,u8),Cow<'static,str>,u8)"
    );
}

#[test]
fn a_non_function_is_an_error() {
    let file = expand(
        quote!(),
        quote!(
            struct S;
        ),
    );
    let errors = compile_errors(&file);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("can only be put on a function"));
    assert!(matches!(file.items.last(), Some(Item::Struct(_))));
}
