//! The commands, one file each, as in mini-redis: every command is a struct with a pure
//! `parse` (from the words after the command word, see [`Words`]) and an `apply` that
//! does the work against the waiter and the connection's [`Conversation`] and returns
//! the [`Reply`].
//!
//! [`Command::parse`] is the whole grammar: it picks the struct by the command word
//! (case-insensitive) and lets it parse its own arguments. It is pure, so the property
//! test and the fuzz target drive it with arbitrary bytes.

mod add;
mod allergy;
mod cancel;
mod hello;
mod help;
mod menu;
mod new;
mod pay;
mod place;
mod quit;
mod remove;
mod request;
mod serve;
mod show;
mod spice;
mod status;

pub use add::Add;
pub use allergy::Allergy;
pub use cancel::Cancel;
pub use hello::Hello;
pub use help::Help;
pub use menu::Menu;
pub use new::New;
pub use pay::Pay;
pub use place::Place;
pub use quit::Quit;
pub use remove::Remove;
pub use request::Request;
pub use serve::Serve;
pub use show::Show;
pub use spice::Spice;
pub use status::Status;

use crate::Waiter;
use crate::tcp::codec::{ParseError, Words, split};
use crate::tcp::conversation::Conversation;
use crate::tcp::reply::{Refusal, Reply, money};
use bistro_orders::{Change, Order};

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELLO [session-id]`: start a session, or resume one.
    Hello(Hello),
    /// `MENU`: list the dishes.
    Menu(Menu),
    /// `NEW`: start an order (and a session, if the connection has none).
    New(New),
    /// `ADD <dish> [qty]`: add portions of a dish to the current order.
    Add(Add),
    /// `REMOVE <dish>`: remove a dish's line from the current order.
    Remove(Remove),
    /// `SPICE <0-5>`: set the spice level.
    Spice(Spice),
    /// `ALLERGY <name>`: declare one more allergy.
    Allergy(Allergy),
    /// `REQUEST <text>`: set the free-text request to the rest of the line.
    Request(Request),
    /// `SHOW`: the current order, one data line per fact.
    Show(Show),
    /// `PLACE`: send the current order to the kitchen.
    Place(Place),
    /// `STATUS`: where the current order is, and when it should be ready.
    Status(Status),
    /// `CANCEL`: cancel the current order before the kitchen starts on it.
    Cancel(Cancel),
    /// `SERVE`: take a ready order to the table.
    Serve(Serve),
    /// `PAY`: pay a served order.
    Pay(Pay),
    /// `HELP`: every command, and what this waiter's mode means.
    Help(Help),
    /// `QUIT`: say goodbye; the server closes the connection after its reply.
    Quit(Quit),
}

/// Every command word with its usage and what it does, in the order `HELP` lists them.
pub const USAGE: [(&str, &str, &str); 16] = [
    (
        "HELLO",
        "HELLO [session-id]",
        "start a session, or resume one (its open order becomes current)",
    ),
    (
        "MENU",
        "MENU",
        "list the dishes: id, price, name, allergens",
    ),
    (
        "NEW",
        "NEW",
        "start an order (and a session, if there is none)",
    ),
    (
        "ADD",
        "ADD <dish> [qty]",
        "add portions of a dish (1 by default)",
    ),
    ("REMOVE", "REMOVE <dish>", "remove a dish from the order"),
    ("SPICE", "SPICE <0-5>", "set the spice level"),
    (
        "ALLERGY",
        "ALLERGY <name>",
        "declare an allergy (peanuts, tree-nuts, gluten, dairy, egg, soy, fish, shellfish, sesame)",
    ),
    (
        "REQUEST",
        "REQUEST <text>",
        "set the free-text request (no text clears it)",
    ),
    ("SHOW", "SHOW", "show the current order"),
    ("PLACE", "PLACE", "send the order to the kitchen"),
    (
        "STATUS",
        "STATUS",
        "where the order is, and when it should be ready",
    ),
    (
        "CANCEL",
        "CANCEL",
        "cancel the order (before the kitchen starts)",
    ),
    ("SERVE", "SERVE", "take a ready order to the table"),
    ("PAY", "PAY", "pay a served order"),
    ("HELP", "HELP", "this list"),
    ("QUIT", "QUIT", "say goodbye and close the connection"),
];

/// The usage line of `command`.
pub(crate) fn usage(command: &str) -> &'static str {
    USAGE
        .iter()
        .find(|(name, _, _)| *name == command)
        .map_or("HELP", |(_, usage, _)| usage)
}

/// The `command` label of a line that did not parse: its command word when that is a
/// known one, else `unknown` (so label values stay a fixed, small set).
pub(crate) fn label(line: &[u8]) -> &'static str {
    match split(line) {
        Ok(Some((verb, _))) => USAGE
            .iter()
            .find(|(name, _, _)| *name == verb)
            .map_or("unknown", |(name, _, _)| name),
        _ => "unknown",
    }
}

/// The words after `command`, with its usage for messages.
pub(crate) fn words<'a>(command: &'static str, rest: &'a str) -> Words<'a> {
    Words::new(rest, command, usage(command))
}

impl Command {
    /// Parses one line (without its terminator). `Ok(None)` for a blank line.
    ///
    /// # Errors
    /// [`ParseError`] says what is wrong; its [`kind`](ParseError::kind) is what `ERR`
    /// carries.
    pub fn parse(line: &[u8]) -> Result<Option<Command>, ParseError> {
        let Some((verb, rest)) = split(line)? else {
            return Ok(None);
        };
        let command = match verb.as_str() {
            "HELLO" => Command::Hello(Hello::parse(words("HELLO", rest))?),
            "MENU" => Command::Menu(Menu::parse(words("MENU", rest))?),
            "NEW" => Command::New(New::parse(words("NEW", rest))?),
            "ADD" => Command::Add(Add::parse(words("ADD", rest))?),
            "REMOVE" => Command::Remove(Remove::parse(words("REMOVE", rest))?),
            "SPICE" => Command::Spice(Spice::parse(words("SPICE", rest))?),
            "ALLERGY" => Command::Allergy(Allergy::parse(words("ALLERGY", rest))?),
            "REQUEST" => Command::Request(Request::parse(words("REQUEST", rest))?),
            "SHOW" => Command::Show(Show::parse(words("SHOW", rest))?),
            "PLACE" => Command::Place(Place::parse(words("PLACE", rest))?),
            "STATUS" => Command::Status(Status::parse(words("STATUS", rest))?),
            "CANCEL" => Command::Cancel(Cancel::parse(words("CANCEL", rest))?),
            "SERVE" => Command::Serve(Serve::parse(words("SERVE", rest))?),
            "PAY" => Command::Pay(Pay::parse(words("PAY", rest))?),
            "HELP" => Command::Help(Help::parse(words("HELP", rest))?),
            "QUIT" => Command::Quit(Quit::parse(words("QUIT", rest))?),
            _ => {
                let mut shown: String = verb.chars().take(32).collect();
                if shown.len() < verb.len() {
                    shown.push('…');
                }
                return Err(ParseError::UnknownCommand(shown));
            }
        };
        Ok(Some(command))
    }

    /// The command word: the `command` label of `bistro_tcp_commands_total`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hello(_) => "HELLO",
            Command::Menu(_) => "MENU",
            Command::New(_) => "NEW",
            Command::Add(_) => "ADD",
            Command::Remove(_) => "REMOVE",
            Command::Spice(_) => "SPICE",
            Command::Allergy(_) => "ALLERGY",
            Command::Request(_) => "REQUEST",
            Command::Show(_) => "SHOW",
            Command::Place(_) => "PLACE",
            Command::Status(_) => "STATUS",
            Command::Cancel(_) => "CANCEL",
            Command::Serve(_) => "SERVE",
            Command::Pay(_) => "PAY",
            Command::Help(_) => "HELP",
            Command::Quit(_) => "QUIT",
        }
    }

    /// Whether the command may change what the session holds (and so, in replicated
    /// mode, must be copied to a backup before it is answered).
    fn writes(&self) -> bool {
        !matches!(
            self,
            Command::Menu(_)
                | Command::Show(_)
                | Command::Status(_)
                | Command::Help(_)
                | Command::Quit(_)
        )
    }

    /// Runs the command for the connection whose state is `conversation`: in
    /// replicated mode with the session located first (taken over if this waiter
    /// holds only its copy) and a change made safe on a backup before the reply.
    pub(crate) async fn apply(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        if let Some(session) = conversation.session
            && let Err(e) = waiter.orders().locate(session).await
        {
            return Reply::err(Refusal::service(waiter, &e));
        }
        let writes = self.writes();
        let reply = self.run(waiter, conversation).await;
        if writes
            && let Some(session) = conversation.session
            && let Err(e) = waiter.orders().settle(session).await
        {
            return Reply::err(Refusal::service(waiter, &e));
        }
        reply
    }

    async fn run(self, waiter: &Waiter, conversation: &mut Conversation) -> Reply {
        match self {
            Command::Hello(c) => c.apply(waiter, conversation).await,
            Command::Menu(c) => c.apply(waiter),
            Command::New(c) => c.apply(waiter, conversation).await,
            Command::Add(c) => c.apply(waiter, conversation).await,
            Command::Remove(c) => c.apply(waiter, conversation).await,
            Command::Spice(c) => c.apply(waiter, conversation).await,
            Command::Allergy(c) => c.apply(waiter, conversation).await,
            Command::Request(c) => c.apply(waiter, conversation).await,
            Command::Show(c) => c.apply(waiter, conversation).await,
            Command::Place(c) => c.apply(waiter, conversation).await,
            Command::Status(c) => c.apply(waiter, conversation).await,
            Command::Cancel(c) => c.apply(waiter, conversation).await,
            Command::Serve(c) => c.apply(waiter, conversation).await,
            Command::Pay(c) => c.apply(waiter, conversation).await,
            Command::Help(c) => c.apply(waiter),
            Command::Quit(c) => c.apply(conversation),
        }
    }
}

/// `order <id> <status> v<version>, <n> dish(es), total <money>`: how every change
/// reports the order it left behind.
pub(crate) fn summary(order: &Order) -> String {
    let dishes = order.items.len();
    format!(
        "order {} {} v{}, {dishes} dish{}, total {}",
        order.id,
        order.status,
        order.version,
        if dishes == 1 { "" } else { "es" },
        money(order.total_cents)
    )
}

/// Applies one change to the current order and answers `OK <what>; <summary>`.
pub(crate) async fn change(
    waiter: &Waiter,
    conversation: &mut Conversation,
    change: Change,
    what: impl FnOnce(&Order) -> String,
) -> Reply {
    match conversation
        .change(waiter, std::slice::from_ref(&change))
        .await
    {
        Ok(order) => Reply::ok(format!("{}; {}", what(&order), summary(&order))),
        Err(refusal) => Reply::err(refusal),
    }
}

#[cfg(test)]
mod tests;
