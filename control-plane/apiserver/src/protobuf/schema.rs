//! How a protobuf message maps to JSON: per message, its fields' numbers, JSON names and types.
//! The numbers are those of upstream's `generated.proto` files (k8s.io/api, apimachinery).

/// The type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `string`: UTF-8 text.
    Str,
    /// `bool`.
    Bool,
    /// `int32`: a varint, sign-extended to 64 bits when negative.
    I32,
    /// `int64`.
    I64,
    /// `bytes`: base64 in JSON.
    Bytes,
    /// A message of the table, by name.
    Msg(&'static str),
    /// `resource.Quantity`: a message whose field 1 is the quantity's string.
    Quantity,
    /// `intstr.IntOrString`: type (0 int, 1 string), intVal, strVal.
    IntOrString,
    /// `metav1.Time` / `MicroTime`: seconds and nanos since the epoch, RFC 3339 in JSON.
    Time,
    /// `map<string, T>`: repeated entries with the key as field 1 and the value as field 2.
    Map(&'static Ty),
    /// A field the table does not describe further: a body setting it is refused (415) rather
    /// than decoded wrongly.
    Opaque,
}

/// How a field's value appears in the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value; a zero scalar is left out, as Go's `omitempty` leaves it out of JSON (the Go
    /// marshaller writes non-pointer scalars even when zero).
    Single,
    /// One value, kept even when zero: pointer fields (only on the wire when set) and required
    /// numbers such as a port.
    Kept,
    /// A JSON array, from repeated (packed or not) fields.
    Repeated,
    /// An embedded struct: its fields are merged into the parent object, as Go's JSON inlines it.
    Inline,
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The protobuf field number.
    pub number: u32,
    /// The JSON name.
    pub name: &'static str,
    /// The type.
    pub ty: Ty,
    /// How it appears in the JSON.
    pub shape: Shape,
}

/// One message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The message's name (the Go type's).
    pub name: &'static str,
    /// Its fields.
    pub fields: &'static [Field],
}

impl Message {
    /// The field with this number.
    pub fn field(&self, number: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.number == number)
    }
}

/// A field left out of the JSON when zero.
pub const fn f(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        shape: Shape::Single,
    }
}

/// A field kept even when zero.
pub const fn k(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        shape: Shape::Kept,
    }
}

/// A repeated field.
pub const fn r(number: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        number,
        name,
        ty,
        shape: Shape::Repeated,
    }
}

/// An embedded message merged into its parent.
pub const fn inline(number: u32, message: &'static str) -> Field {
    Field {
        number,
        name: message,
        ty: Ty::Msg(message),
        shape: Shape::Inline,
    }
}

/// A message.
pub const fn m(name: &'static str, fields: &'static [Field]) -> Message {
    Message { name, fields }
}
