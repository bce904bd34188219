//! Unit tests of the expansions' shape; `ui-tests/tests/ui` checks what the
//! compiler makes of them.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{File, ImplItem, Item, ItemImpl};

use crate::{actor, expand};

fn expand(attr: TokenStream, item: TokenStream) -> File {
    parse(expand::task(attr, item))
}

fn expand_actor(attr: TokenStream, item: TokenStream) -> File {
    parse(actor::actor(attr, item))
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

/// The inherent `impl` blocks of `file` whose self type is `name`.
fn inherent_impls<'f>(file: &'f File, name: &str) -> Vec<&'f ItemImpl> {
    file.items
        .iter()
        .filter_map(|item| match item {
            Item::Impl(i) if i.trait_.is_none() && compact(&i.self_ty) == name => Some(i),
            _ => None,
        })
        .collect()
}

/// The functions of `imp`, as `name(inputs) -> output` without spaces.
fn signatures(imp: &ItemImpl) -> Vec<String> {
    imp.items
        .iter()
        .filter_map(|item| match item {
            ImplItem::Fn(f) => {
                let sig = &f.sig;
                let (name, inputs, output) = (&sig.ident, &sig.inputs, &sig.output);
                Some(compact(quote!(#name(#inputs) #output)))
            }
            _ => None,
        })
        .collect()
}

fn counter() -> TokenStream {
    quote! {
        impl Counter {
            /// Starts at `start`.
            pub fn new(start: u64) -> Self { Counter { n: start } }
            /// Adds `by`.
            pub fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
            pub fn get(&self) -> u64 { self.n }
            pub async fn slow_get(&self) -> u64 { self.n }
            pub(crate) fn add2(&mut self, a: u64, b: u64) -> Result<u64, String> { Ok(a + b) }
            fn helper(x: u32) -> u32 { x }
            const LIMIT: u64 = 10;
        }
    }
}

#[test]
fn actor_impl() {
    let file = expand_actor(quote!(), counter());
    assert!(compile_errors(&file).is_empty());
    let Item::Impl(first) = &file.items[0] else {
        panic!("the impl block comes first")
    };
    assert_eq!(compact(first), compact(counter()));

    let ty = impl_of(&file, "ActorType");
    assert_eq!(
        compact(&ty.trait_.as_ref().unwrap().1),
        "::mproc::__private::ActorType"
    );
    assert_eq!(assoc(ty, "Args"), "u64");
    assert_eq!(
        assoc(ty, "NAME"),
        r#"::core::concat!(::core::module_path!(),"::","Counter")"#
    );
    assert_eq!(assoc(ty, "METHODS"), r#"&["incr","get","slow_get","add2"]"#);
    assert_eq!(signatures(ty), ["construct(__mproc_arg0:Self::Args)->Self"]);
    assert!(compact(ty).contains("Self::new(__mproc_arg0)"));

    let object = compact(impl_of(&file, "ActorObject"));
    for expected in [
        "0=>::std::boxed::Box::pin(asyncmove{let(__mproc_arg0,)=::mproc::__private::\
         decode_args::<(u64,)>(args)?;::mproc::__private::encode_reply::<u64>(&Self::incr(\
         self,__mproc_arg0))})",
        "1=>::std::boxed::Box::pin(asyncmove{let()=::mproc::__private::decode_args::<()>(\
         args)?;",
        "encode_reply::<u64>(&Self::slow_get(self,).await)",
        "decode_args::<(u64,u64,)>(args)?",
        "encode_reply::<Result<u64,String>>(&Self::add2(self,__mproc_arg0,__mproc_arg1))",
        "_=>::std::boxed::Box::pin(asyncmove{let_=args;::core::result::Result::Err(\
         ::mproc::__private::unknown_method(<Selfas::mproc::__private::ActorType>::NAME,",
    ] {
        assert!(object.contains(expected), "{expected} not in {object}");
    }
    assert!(!object.contains("helper"));

    let Some(Item::Struct(client)) = file
        .items
        .iter()
        .find(|i| matches!(i, Item::Struct(s) if s.ident == "CounterClient"))
    else {
        panic!("no client struct")
    };
    assert!(matches!(client.vis, syn::Visibility::Public(_)));
    assert_eq!(
        compact(&client.fields),
        "{raw:::mproc::__private::RawActorRef,}"
    );
    assert!(client.attrs.iter().any(|a| a.path().is_ident("doc")));
    assert!(compact(client).contains("derive(::core::clone::Clone,::core::fmt::Debug)"));
    let raw = impl_of(&file, "ActorClient");
    assert_eq!(compact(&raw.self_ty), "CounterClient");

    let [methods] = &inherent_impls(&file, "CounterClient")[..] else {
        panic!("one impl block of client methods")
    };
    assert_eq!(
        signatures(methods),
        [
            "incr(&self,by:u64)->::mproc::ActorCall<u64>",
            "get(&self,)->::mproc::ActorCall<u64>",
            "slow_get(&self,)->::mproc::ActorCall<u64>",
            "add2(&self,a:u64,b:u64)->::mproc::ActorCall<Result<u64,String>>",
        ]
    );
    let methods_text = compact(methods);
    assert!(methods_text.contains("self.raw.call::<(u64,),u64>(0,\"incr\",&(by,))"));
    assert!(methods_text.contains("self.raw.call::<(),u64>(2,\"slow_get\",&())"));
    assert!(
        methods_text.contains("pub(crate)fnadd2"),
        "the method's visibility"
    );
    let ImplItem::Fn(incr) = &methods.items[0] else {
        panic!()
    };
    let docs: Vec<String> = incr.attrs.iter().map(compact).collect();
    assert_eq!(docs[0], compact(quote!(#[doc = r" Adds `by`."])));
    assert!(docs.len() == 3 && docs[2].contains("Runs`Counter::incr`"));

    assert_eq!(assoc(impl_of(&file, "Actor"), "Client"), "CounterClient");

    let spawn = inherent_impls(&file, "Counter");
    assert_eq!(spawn.len(), 2, "the block itself and the spawn functions");
    let started = "->impl::core::future::Future<Output=::core::result::Result<::mproc::\
                   ActorRef<Self>,::mproc::Error>>+::core::marker::Send+'static";
    assert_eq!(
        signatures(spawn[1]),
        [
            format!("spawn(executor:&::mproc::Executor,args:u64){started}"),
            format!(
                "spawn_with(executor:&::mproc::Executor,args:u64,options:::mproc::\
                 ActorOptions){started}"
            ),
        ]
    );
    assert!(
        compact(spawn[1]).contains("pubfnspawn("),
        "the visibility of `new`"
    );

    let all = compact(&file);
    assert!(all.contains("ActorEntry::of::<Counter>()"));
    assert!(all.contains("distributed_slice(::mproc::__private::ACTORS)"));
    // One argument: serde is checked by the calls, `Send` here.
    assert_eq!(all.matches("assert_send::<u64>()").count(), 1);
    // Several arguments: each one is checked.
    assert_eq!(all.matches("assert_wire::<u64>()").count(), 2);
    assert!(!all.contains("assert_constructor_arg"));
}

#[test]
fn constructor_arguments() {
    let several = expand_actor(
        quote!(),
        quote! {
            impl Pair {
                fn new(a: String, (b, c): (u8, u8)) -> Pair { Pair { a, b, c } }
            }
        },
    );
    let ty = impl_of(&several, "ActorType");
    assert_eq!(assoc(ty, "Args"), "(String,(u8,u8))");
    let construct = compact(ty);
    assert!(construct.contains(
        "fnconstruct((__mproc_arg0,__mproc_arg1):Self::Args)->Self{Self::new(__mproc_arg0,\
         __mproc_arg1)}"
    ));
    assert_eq!(assoc(ty, "METHODS"), "&[]");
    let all = compact(&several);
    assert!(all.contains("assert_constructor_arg::<String>()"));
    assert!(all.contains("assert_constructor_arg::<(u8,u8)>()"));
    assert!(all.contains("spawn(executor:&::mproc::Executor,args:(String,(u8,u8)))"));
    assert!(
        all.contains("fnspawn("),
        "a private `new`, a private `spawn`"
    );
    assert!(!all.contains("pubfnspawn("));

    let none = expand_actor(
        quote!(),
        quote! {
            impl Unit {
                pub const fn new() -> Self { Unit }
            }
        },
    );
    assert!(compile_errors(&none).is_empty(), "`const fn new` is fine");
    let ty = impl_of(&none, "ActorType");
    assert_eq!(assoc(ty, "Args"), "()");
    assert!(compact(ty).contains("fnconstruct(_:Self::Args)->Self{Self::new()}"));
}

#[test]
fn self_in_method_types_is_replaced_outside_the_impl() {
    let file = expand_actor(
        quote!(),
        quote! {
            impl Node {
                fn new() -> Self { Node }
                fn children(&self, filter: Option<Self>) -> Vec<Self> { vec![] }
                fn sized(&self) -> [u8; Self::N] { [0; Self::N] }
            }
        },
    );
    let [methods] = &inherent_impls(&file, "NodeClient")[..] else {
        panic!()
    };
    assert_eq!(
        signatures(methods),
        [
            "children(&self,filter:Option<Node>)->::mproc::ActorCall<Vec<Node>>",
            "sized(&self,)->::mproc::ActorCall<[u8;<Node>::N]>",
        ]
    );
    assert!(compact(&file).contains("assert_send::<Option<Node>>()"));
}

#[test]
fn client_argument_names() {
    let file = expand_actor(
        quote!(),
        quote! {
            impl A {
                fn new() -> Self { A }
                fn f(&mut self, mut x: u8, (a, b): (u8, u8), _: u8, arg1: u8, ref r: u8) {}
            }
        },
    );
    let [methods] = &inherent_impls(&file, "AClient")[..] else {
        panic!()
    };
    assert_eq!(
        signatures(methods),
        ["f(&self,x:u8,_arg1:(u8,u8),arg2:u8,arg1:u8,arg4:u8)->::mproc::ActorCall<()>"]
    );
}

#[test]
fn actor_crate_path_raw_name_and_cfg() {
    let file = expand_actor(
        quote!(crate = ::other::mproc),
        quote! {
            #[cfg(unix)]
            impl r#Type {
                fn new() -> Self { r#Type }
                #[cfg(feature = "x")]
                #[deprecated]
                fn r#match(&self) {}
            }
        },
    );
    let all = compact(&file);
    assert!(
        !all.contains(":::mproc") && !all.contains("{::mproc"),
        "{all}"
    );
    assert_eq!(
        compact(&impl_of(&file, "Actor").trait_.as_ref().unwrap().1),
        "::other::mproc::Actor"
    );
    assert!(all.contains("#[linkme(crate=::other::mproc::__private::linkme)]"));
    let ty = impl_of(&file, "ActorType");
    assert!(assoc(ty, "NAME").ends_with(r#""Type")"#));
    assert_eq!(assoc(ty, "METHODS"), r#"&["match"]"#);
    assert!(all.contains("pubstructTypeClient"));
    // The method's `cfg` is on its arm, client method and checks.
    assert!(all.contains("#[cfg(feature=\"x\")]0=>"));
    assert!(all.contains("#[deprecated]#[doc=\"Runs`r#Type::r#match`"));
    assert!(all.contains("#[cfg(feature=\"x\")]fnr#match(&self,)"));
    for item in &file.items {
        let attrs = match item {
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
fn actor_errors_are_all_reported_with_stand_ins() {
    let original = quote! {
        impl Counter {
            async fn new(&self) -> u64 { 0 }
            fn generic<T>(&self, x: T) {}
            fn by_value(self) {}
            fn boxed(self: Box<Self>) {}
            const fn qualified(&self) {}
            fn borrowed(&self, s: &str) -> &str { s }
            fn opaque(&self, x: impl Copy) -> impl Copy { x }
            fn spawn() {}
            fn helper<T>(x: &T) {}
        }
    };
    let file = expand_actor(quote!(unknown), original.clone());
    let mut errors = compile_errors(&file);
    // The last error is inside the stand-in `Args`.
    let stand_in = compact(impl_of(&file, "ActorType"));
    assert!(
        stand_in.contains("typeArgs=[();{::core::compile_error!{"),
        "{stand_in}"
    );
    errors.push(stand_in);
    let expected = [
        "unknown argument to `#[actor]`",
        "cannot be `async`",
        "cannot take `self`",
        "must return `Self` (or `Counter`)",
        "mproc actor methods cannot be generic",
        "take `&self` or `&mut self`",
        "take `&self` or `&mut self`",
        "mproc actor methods cannot be `const fn`",
        "mproc actor method arguments cannot be borrowed",
        "mproc actor methods cannot return borrowed data",
        "mproc actor method arguments cannot be `impl Trait`",
        "mproc actor methods cannot return `impl Trait`",
        "`spawn` is taken by `#[actor]`",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(expected) {
        let (error, expected) = (error.replace(' ', ""), expected.replace(' ', ""));
        assert!(error.contains(&expected), "{error} does not say {expected}");
    }
    // The errors but the last one are items before the block.
    let Item::Impl(kept) = &file.items[expected.len() - 1] else {
        panic!("the impl block after the errors")
    };
    assert_eq!(compact(kept), compact(original));
    assert_eq!(
        assoc(impl_of(&file, "Actor"), "Client"),
        "<<Selfas::mproc::__private::ActorType>::Argsas::core::iter::IntoIterator>::Item"
    );
    impl_of(&file, "ActorObject");
    assert!(
        inherent_impls(&file, "Counter").len() == 1,
        "no stand-in `spawn`: the block has one"
    );
}

#[test]
fn missing_constructor() {
    let file = expand_actor(
        quote!(),
        quote! {
            impl Counter {
                fn get(&self) -> u64 { 0 }
            }
        },
    );
    let stand_in = compact(impl_of(&file, "ActorType"));
    assert!(stand_in.contains("needsaconstructor"), "{stand_in}");
    assert!(stand_in.contains("`Counter::spawn`takes"));
    let spawn = inherent_impls(&file, "Counter");
    assert_eq!(spawn.len(), 2, "the block and a stand-in `spawn`");
    assert!(compact(spawn[1]).contains("pubfnspawn(executor:&::mproc::Executor,args:<Selfas"));
}

#[test]
fn a_trait_impl_is_one_error_and_kept_as_is() {
    let original = quote! {
        impl<T> Display for Counter<T> where T: Copy {
            fn fmt(self) {}
        }
    };
    let file = expand_actor(quote!(), original.clone());
    let errors = compile_errors(&file);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("not on an implementation of a trait"));
    assert!(errors[0].contains("`impl Counter { .. }`"));
    assert_eq!(file.items.len(), 2);
    assert_eq!(compact(&file.items[1]), compact(original));
}

#[test]
fn generic_impl_without_stand_ins() {
    let file = expand_actor(
        quote!(),
        quote! {
            impl<T> Holder<T> where T: Clone {
                fn new() -> Self { Holder { items: Vec::new() } }
            }
        },
    );
    let errors = compile_errors(&file);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("mproc actors cannot be generic"));
    assert!(errors[1].contains("mproc actors cannot have a `where` clause"));
    assert_eq!(file.items.len(), 3, "no stand-ins");

    let file = expand_actor(
        quote!(),
        quote! {
            impl Holder<u8> {
                fn new() -> Self { Holder { items: Vec::new() } }
            }
        },
    );
    let errors = compile_errors(&file);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("mproc actors cannot be generic"));
}

#[test]
fn actor_types() {
    let original = quote! {
        #[derive(Debug)]
        pub struct Counter { n: u64 }
    };
    let file = expand_actor(quote!(crate = ::m), original.clone());
    assert_eq!(compact(&file), compact(&original));

    let file = expand_actor(
        quote!(),
        quote!(
            enum State {
                A,
                B,
            }
        ),
    );
    assert!(compile_errors(&file).is_empty());

    let file = expand_actor(
        quote!(),
        quote!(
            struct Holder<'a, T: 'a>
            where
                T: Copy,
            {
                t: &'a T,
            }
        ),
    );
    let errors = compile_errors(&file);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("mproc actors cannot be generic"));
    assert!(errors[1].contains("`where` clause"));
    assert!(matches!(file.items.last(), Some(Item::Struct(_))));
}

#[test]
fn actor_on_anything_else() {
    for item in [
        quote!(
            fn f() {}
        ),
        quote!(
            pub(crate) async fn f() {}
        ),
        quote!(
            trait T {}
        ),
        quote!(union U { a: u8 }),
        quote!(
            mod m {}
        ),
    ] {
        let file = expand_actor(quote!(), item.clone());
        let errors = compile_errors(&file);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("can only be put on an actor type"));
        assert_eq!(compact(&file.items[1]), compact(item));
    }
}

#[test]
fn bad_arguments_on_a_valid_actor_still_expand() {
    let file = expand_actor(quote!(crate = ::a, crate = ::b, name = "x"), counter());
    let errors = compile_errors(&file);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("duplicate `crate` argument"));
    assert!(errors[1].contains("unknown argument to `#[actor]`"));
    assert_eq!(assoc(impl_of(&file, "Actor"), "Client"), "CounterClient");
}
