//! A component of a world that is not one of `postern:plugin`'s: `postern plugin inspect`
//! must say it is no plugin, and `apply` must refuse it.

wit_bindgen::generate!({
    inline: "
        package test:other;
        world other {
            export answer: func() -> u32;
        }
    ",
    world: "other",
});

struct NotAPlugin;

impl Guest for NotAPlugin {
    fn answer() -> u32 {
        42
    }
}

export!(NotAPlugin);
