"""The category hierarchy of the semantic world, in real-world words (renamed at build time).

After Rogers & McClelland's semantic-cognition tree: animals, plants and objects, 115
categories, each with its parent (indentation) and 1-6 own properties and relations. Every word
is replaced by a nonsense word when a world is built, one word per (role, label); the real
labels exist only here, to keep the structure sensible and this file readable.

Line format: `label: relation object; relation object; ...` with relations
is (adjective), can (ability), has (part), eats (food), lives_in (habitat), made_of (material).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

#: Relation -> role of its object's words.
OBJECT_ROLE = {"is": "adjective", "can": "ability", "has": "part", "eats": "food",
               "lives_in": "habitat", "made_of": "material"}

TREE = """
living_thing: is alive; can grow
  animal: can move; can breathe; has eyes; has skin; can sleep
    mammal: is warm_blooded; has fur; can nurse
      feline: has whiskers; has claws; can pounce; eats meat
        cat: can purr; lives_in house; is small
        lion: has mane; can roar; lives_in savanna
        tiger: is striped; lives_in jungle; is large
        leopard: is spotted; can climb
      canine: has snout; can howl
        dog: can bark; lives_in house; is loyal
        wolf: lives_in forest; is social; can hunt
        fox: is red; is clever; eats berry
      hoofed_mammal: has hooves; eats grass
        horse: has mane; can gallop; lives_in farm
        cow: is large; lives_in farm; can moo
        sheep: has wool; lives_in farm
        goat: has horns; can climb; lives_in mountain
        deer: has antlers; lives_in forest; is shy
        giraffe: has long_neck; lives_in savanna; is tall
      primate: has hands; is clever; can climb
        monkey: has tail; eats fruit; lives_in jungle
        gorilla: is strong; eats leaf; lives_in jungle
        lemur: is nocturnal; has tail
      rodent: can gnaw; is small
        mouse: eats seed; lives_in field; is tiny
        rat: eats scraps; lives_in city
        squirrel: eats nut; lives_in park; has bushy_tail
        beaver: can swim; lives_in river; can build_dams
      sea_mammal: can swim; lives_in ocean
        whale: is huge; eats plankton
        dolphin: is playful; eats fish_meat
        seal: has flippers; eats fish_meat
      elephant: has trunk; has tusks; lives_in savanna; is huge
      bear: is strong; eats honey; lives_in forest; can hibernate
      rabbit: can hop; has long_ears; eats carrot
      bat: can fly; is nocturnal; eats bug; lives_in cave
    bird: has feathers; has wings; has beak; can lay_eggs; is light; can build_nests
      songbird: can sing; is small
        robin: has red_breast; eats worm
        sparrow: eats seed; lives_in city
        canary: is yellow; lives_in cage
        finch: eats seed; is colorful
      raptor: has talons; can hunt; eats meat
        eagle: lives_in mountain; is large
        hawk: can soar; has sharp_eyes
        owl: is nocturnal; can hoot
        falcon: is fast; can dive
      waterbird: can swim; lives_in lake
        duck: can quack; eats algae
        swan: is white; is graceful
        pelican: has pouch; eats fish_meat
      penguin: can dive; lives_in antarctic; is flightless
      ostrich: is flightless; is fast; lives_in savanna
      parrot: is colorful; can talk; eats fruit
    fish: has gills; has fins; can swim; has scales; lives_in water
      salmon: is pink; lives_in river; can leap
      shark: is dangerous; has sharp_teeth; lives_in ocean; eats meat
      goldfish: is orange; lives_in bowl
      tuna: is fast; lives_in ocean
      eel: is slimy; lives_in river
    reptile: is cold_blooded; has scales; can lay_eggs
      snake: can slither; is venomous; eats egg
      lizard: can climb; lives_in desert
      turtle: has shell; is slow; lives_in pond
      crocodile: is dangerous; lives_in swamp; has sharp_teeth
    amphibian: is cold_blooded; can swim; lives_in pond
      frog: can hop; eats bug; can croak
      toad: is warty; lives_in garden
      salamander: has tail; is slimy
    insect: has six_legs; has antennae; is tiny
      bee: can sting; eats nectar; lives_in hive
      ant: is social; lives_in anthill; is strong
      butterfly: has wings; is colorful; eats nectar
      mosquito: can bite; eats blood
      grasshopper: can hop; eats grass
  plant: has roots; has leaves; is green
    tree: has bark; has trunk; is tall
      oak: has acorns; is strong
      pine: is evergreen; has needles
      maple: has sweet_sap; is red
      birch: is white; lives_in forest
      palm: lives_in beach; has fronds
    flower: has petals; is colorful; is fragrant
      rose: has thorns; is red
      tulip: has bulb; lives_in garden
      daisy: is white; lives_in meadow
      sunflower: is tall; is yellow
      orchid: is rare; lives_in jungle
    cactus: has spines; lives_in desert
object: is inanimate; is useful
  vehicle: can carry; has seats
    car: has wheels; has engine
    bus: has wheels; is large
    bicycle: has pedals; has wheels
    truck: is heavy; has wheels; can tow
    airplane: has wings; can fly; has engine
    boat: can float; made_of wood
  furniture: has legs; made_of wood
    chair: has backrest
    table: is flat
    bed: is soft
    sofa: is comfortable; is soft
    desk: has drawers
  tool: made_of metal; has handle
    hammer: is heavy
    saw: has sharp_teeth; can cut
    knife: is sharp; can cut
    shovel: can dig
    screwdriver: is thin
  instrument: can make_music
    guitar: has strings; made_of wood
    piano: has keys; is heavy
    drum: is loud
    violin: has strings; is small
    trumpet: is loud; made_of brass
"""


@dataclass(frozen=True)
class Category:
    label: str
    parent: str | None
    own: tuple[tuple[str, str], ...]  # (relation, object label)


@functools.lru_cache(maxsize=1)
def categories() -> tuple[Category, ...]:
    """The hierarchy in file order (every parent before its children)."""
    out: list[Category] = []
    stack: list[tuple[int, str]] = []
    for line in TREE.strip("\n").splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        label, _, rest = line.strip().partition(":")
        own = []
        for clause in rest.split(";"):
            relation, _, obj = clause.strip().partition(" ")
            if relation not in OBJECT_ROLE or not obj:
                raise ValueError(f"semantic tree: bad clause {clause!r} in line {line!r}")
            own.append((relation, obj.strip()))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        out.append(Category(label, stack[-1][1] if stack else None, tuple(own)))
        stack.append((depth, label))
    return tuple(out)
